"""A user's Qdrant point: from their interest state, or from their table record.

Building a point (unit channels, fusion, top terms, payload) costs ~0.1 ms a user. The
worker queues changed users as `RecordPoint`s (the record bytes it has just written to its
table) and the point is built where it is written: with the `local-process` engine, in
Qdrant's child process, off the core the stream runs on (streams/qdrant_process.py).
"""

from __future__ import annotations

import time

from streams.record import UserRecord
from streams.sink import RecordPoint, UserPoint
from streams.state import InterestState, StateParams


def user_point(user_id: str, state: InterestState, published_at: float | None) -> UserPoint:
    """The Qdrant `users` point: the five vectors (absent ones omitted) and the payload."""
    return UserPoint(
        user_id=user_id,
        vectors=state.named_vectors(),
        payload={
            "user_id": user_id,
            "top_terms": [[t, round(w, 6)] for t, w in state.top_terms(10)],
            "counts": state.counts,
            "seen_items": state.seen_items(),
            "first_ts": state.first_ts,
            "last_ts": state.last_ts,
            # newest Kafka (publish) timestamp among the events behind this point
            "published_at": published_at,
            "updated_at": time.time(),
        },
    )


def point_from_record(p: RecordPoint, params: StateParams) -> UserPoint:
    """The point of a queued record (RecordDecodeError if the bytes are not a record)."""
    return user_point(p.user_id, UserRecord.from_bytes(p.record, params).state, p.published_at)
