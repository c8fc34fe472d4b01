"""What the worker keeps per user in its table: the interest state and what makes it exact.

Besides `InterestState` (vectors, terms, items, counters, input offsets), a record holds
- hashes of the user's most recent event ids, so an event published twice (two offsets,
  one event id) is applied once;
- clicks parked until their item arrives, with the original message for the dead-letter
  topic should it never come. They live in the same record as the state, so parking,
  applying and forgetting a click are each one atomic table write;
- `erased_at`: the user was deleted (at that Kafka timestamp). The record then holds offsets
  only (no vectors, terms, items or ids), so messages from before the deletion that Kafka
  re-delivers after a crash, or that arrive late from another topic, are recognised instead
  of bringing the user back.

Layout: b"UR1", u32 state length, state bytes, u16 id count, u64 hashes, then JSON (UTF-8)
of the parked clicks and flags. A record too short, of an unknown version or with
inconsistent lengths raises `RecordDecodeError`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from streams.state import InterestState, StateDecodeError, StateParams

MAGIC = b"UR1"
_HEAD = struct.Struct("<3sI")


class RecordDecodeError(ValueError):
    """Bytes that are not a user record of a version we know."""


def event_hash(event_id: str) -> int:
    """64-bit digest of an event id (collisions: ~1e-15 within one user's window)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


@dataclass
class ParkedClick:
    """A click whose item was unknown when it arrived; `value` is the original message."""

    item_id: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    parked_at: float  # wall clock, for the maximum wait

    def to_json(self) -> dict[str, Any]:
        return {
            "item_id": self.item_id,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": None if self.key is None else base64.b64encode(self.key).decode(),
            "value": base64.b64encode(self.value).decode(),
            "parked_at": self.parked_at,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ParkedClick:
        return cls(
            item_id=str(d["item_id"]),
            topic=str(d["topic"]),
            partition=int(d["partition"]),
            offset=int(d["offset"]),
            key=None if d["key"] is None else base64.b64decode(d["key"]),
            value=base64.b64decode(d["value"]),
            parked_at=float(d["parked_at"]),
        )


@dataclass
class UserRecord:
    state: InterestState
    recent_ids: list[int] = field(default_factory=list)  # event hashes, oldest first
    parked: list[ParkedClick] = field(default_factory=list)
    erased_at: float | None = None  # Kafka timestamp of the latest deletion; None: never
    erased: bool = False  # deleted, and nothing applied since
    # wall-clock time each channel (word, sentence, document, negative) last changed
    changed_at: list[float | None] = field(default_factory=lambda: [None] * 4)

    @classmethod
    def new(cls, dim: int, params: StateParams) -> UserRecord:
        return cls(InterestState(dim, params))

    def seen_event(self, event_id: str, window: int) -> bool:
        """True if the id is among the recent ones; otherwise remember it (bounded)."""
        h = event_hash(event_id)
        if h in self.recent_ids:
            return True
        if window > 0:
            self.recent_ids.append(h)
            del self.recent_ids[:-window]
        return False

    def erase(self, at: float | None) -> None:
        """Forget everything about the user except which input offsets were handled and when
        the deletion was published (None: unknown, then only offsets protect)."""
        offsets = self.state._offsets
        self.state = InterestState(self.state.dim, self.state.params)
        self.state._offsets = dict(offsets)
        self.recent_ids = []
        self.parked = []
        self.erased = True
        self.changed_at = [None] * 4
        if at is not None:
            self.erased_at = max(at, self.erased_at or at)

    def erased_before(self, published_at: float | None) -> bool:
        """True for an event published no later than the user's deletion."""
        return (
            self.erased_at is not None
            and published_at is not None
            and published_at <= self.erased_at
        )

    def to_bytes(self) -> bytes:
        state = self.state.to_bytes()
        tail = json.dumps(
            {
                "parked": [p.to_json() for p in self.parked],
                "erased": self.erased,
                "erased_at": self.erased_at,
                "changed_at": self.changed_at,
            },
            separators=(",", ":"),
        ).encode()
        ids = struct.pack(f"<H{len(self.recent_ids)}Q", len(self.recent_ids), *self.recent_ids)
        return _HEAD.pack(MAGIC, len(state)) + state + ids + tail

    @classmethod
    def from_bytes(cls, data: bytes, params: StateParams) -> UserRecord:
        """Decode; raises RecordDecodeError on anything but a record we wrote.

        >>> r = UserRecord.new(2, StateParams())
        >>> r.seen_event("e1", 8), r.seen_event("e1", 8)
        (False, True)
        >>> back = UserRecord.from_bytes(r.to_bytes(), StateParams())
        >>> back.seen_event("e1", 8), back.erased
        (True, False)
        >>> UserRecord.from_bytes(b"UR9...", StateParams())
        Traceback (most recent call last):
        ...
        streams.record.RecordDecodeError: not a user record (version b'UR9')
        """
        if len(data) < _HEAD.size or data[:3] != MAGIC:
            raise RecordDecodeError(f"not a user record (version {bytes(data[:3])!r})")
        _, n = _HEAD.unpack_from(data)
        at = _HEAD.size
        if at + n + 2 > len(data):
            raise RecordDecodeError("user record truncated")
        try:
            state = InterestState.from_bytes(data[at : at + n], params)
        except StateDecodeError as err:
            raise RecordDecodeError(f"user record holds a bad state: {err}") from None
        at += n
        (k,) = struct.unpack_from("<H", data, at)
        at += 2
        if at + 8 * k > len(data):
            raise RecordDecodeError("user record truncated in its event ids")
        ids = list(struct.unpack_from(f"<{k}Q", data, at))
        at += 8 * k
        try:
            tail = json.loads(data[at:])
            parked = [ParkedClick.from_json(p) for p in tail["parked"]]
            erased = bool(tail["erased"])
            erased_at = None if tail["erased_at"] is None else float(tail["erased_at"])
            changed_at = [None if t is None else float(t) for t in tail["changed_at"]]
            if len(changed_at) != 4:
                raise ValueError("changed_at must have 4 entries")
        except (ValueError, KeyError, TypeError) as err:
            raise RecordDecodeError(f"user record has a bad tail: {err}") from None
        return cls(state, ids, parked, erased_at, erased, changed_at)
