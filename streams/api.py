"""The read side: recommendations, interests and similar users, as JSON documents.

Framework-free (streams/app.py maps HTTP routes onto it), so every 4xx path is plain code.
The worker holds each user's state in its table, so a recommendation is one Qdrant query
with the user's vectors in hand: no second round trip to fetch them.

- granularity `fused` (default), `word`, `sentence` or `document`: that vector's nearest
  items; when the user has negative feedback, Qdrant's recommend moves the query away
  from their negative vector;
- `hybrid`: one candidate list per granularity, fused by reciprocal rank (RRF);
- recently seen items never come back; `tags` keeps items with any of the given tags;
- cold start (unknown user, or fewer than `cold_start_min_events` events): the items most
  clicked recently on this worker, said so in the response;
- every item gets `score` (Qdrant's ranking score), `p` = σ(β·s + b) on its cosine `s` to
  the user's vector (β, b from the settings; `interest-stream eval` fits them), and `why`:
  the granularity whose vector is closest to the item, with the matched terms.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from streams.popularity import Popularity
from streams.ranking_metrics import Calibration
from streams.record import UserRecord
from streams.state import CHANNELS, KINDS

GRANULARITIES = ("fused", "word", "sentence", "document", "hybrid")
# the event schema's id rule; used with fullmatch (re's `$` also matches before a final
# newline, which would let "alice\n" through)
_ID = re.compile(r"[A-Za-z0-9_.:@\-]{1,128}")
_TAG = re.compile(r"[^,\x00-\x1f]{1,64}")


class ApiError(Exception):
    """A request we refuse: `status` is the HTTP code, the message goes in the JSON body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def user_id_of(raw: str) -> str:
    if not _ID.fullmatch(raw):
        raise ApiError(400, "user_id must be 1-128 characters of A-Z a-z 0-9 _ . : @ -")
    return raw


def int_param(query: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer, got {raw[:32]!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be in {lo}..{hi}, got {value}")
    return value


def granularity_of(query: dict[str, str]) -> str:
    g = query.get("granularity", "fused")
    if g not in GRANULARITIES:
        raise ApiError(
            400, f"granularity must be one of {', '.join(GRANULARITIES)}, got {g[:32]!r}"
        )
    return g


def tags_of(query: dict[str, str]) -> list[str]:
    raw = query.get("tags")
    if raw is None or raw == "":
        return []
    tags = [t.strip() for t in raw.split(",") if t.strip()]
    if not tags or len(tags) > 20 or not all(_TAG.fullmatch(t) for t in tags):
        raise ApiError(400, "tags must be a comma-separated list of up to 20 tags")
    return tags


def _cos(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    if a is None or b is None:
        return None
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else None


Blocking = Callable[..., Awaitable[Any]]


class ReadSide:
    def __init__(
        self,
        sink: Any,
        run: Blocking,
        load: Callable[[str], UserRecord | None],
        popularity: Popularity,
        calibration: Calibration,
        cold_start_min_events: int = 3,
        prior_weight: float = 0.0,
        prior_candidates: int = 100,
    ) -> None:
        self.sink = sink
        self.run = run
        self.load = load
        self.popularity = popularity
        self.calibration = calibration
        self.cold_start_min_events = cold_start_min_events
        self.prior_weight = prior_weight
        self.prior_candidates = prior_candidates

    def _record(self, user_id: str) -> UserRecord | None:
        record = self.load(user_id)
        if record is None or record.erased or record.state.last_ts is None:
            return None
        return record

    async def recommendations(self, user_id: str, query: dict[str, str]) -> dict[str, Any]:
        user_id = user_id_of(user_id)
        k = int_param(query, "k", 10, 1, 100)
        granularity = granularity_of(query)
        tags = tags_of(query)
        record = self._record(user_id)
        events = 0 if record is None else sum(record.state.counts[c] for c in KINDS)
        if record is None or events < self.cold_start_min_events:
            seen = [] if record is None else record.state.seen_items()
            return await self._popular(user_id, k, tags, seen, events)
        st = record.state
        vec = st.named_vectors()
        seen = st.seen_items()
        if granularity == "hybrid":
            parts = [vec[c] for c in ("word", "sentence", "document") if vec[c] is not None]
            hits = await self.run(
                self.sink.recommend_items, None, k, exclude=seen, tags=tags, prefetch=parts
            )
            target = vec["fused"]
        else:
            target = vec[granularity]
            if target is None:
                raise ApiError(
                    409, f"user {user_id!r} has no {granularity} vector yet (no such text)"
                )
            # with a popularity prior: the top `prior_candidates` by similarity and by
            # popularity, re-ranked by score + γ·prior (what `interest-stream eval` measures)
            blend = self.prior_weight > 0
            n = max(k, self.prior_candidates) if blend else k
            hits = await self.run(
                self.sink.recommend_items,
                target,
                n,
                exclude=seen,
                tags=tags,
                negative=vec["negative"],
            )
            if blend:
                have = {h[0] for h in hits}
                popular = [i for i, _ in self.popularity.top(n, exclude=seen) if i not in have]
                extra = await self.run(self.sink.get_item_vectors, popular) if popular else {}
                query = recommend_query(target, vec["negative"])
                for item_id, (payload, item_vec) in extra.items():
                    if not tags or set(tags) & set(payload.get("tags", [])):
                        hits.append((item_id, _cos(item_vec, query) or 0.0, payload, item_vec))
                hits = rerank_with_prior(
                    hits, self.popularity.prior([h[0] for h in hits]), self.prior_weight, k
                )
        terms = dict(st.top_terms(30))
        items = []
        for item_id, score, payload, item_vec, *prior in hits:
            # p calibrates the ranking score; RRF ranks (hybrid) are no similarity, so there
            # the item's cosine to the fused vector stands in
            s = _cos(item_vec, target) if granularity == "hybrid" else score
            why = _why(item_vec, vec, terms, payload)
            if prior:
                why["popularity_prior"] = round(prior[0], 4)
            items.append(
                {
                    "item_id": item_id,
                    "title": payload.get("title"),
                    "tags": payload.get("tags", []),
                    "score": round(score, 6),
                    "p": None if s is None else round(float(self.calibration.p(s)), 6),
                    "why": why,
                }
            )
        return {
            "user_id": user_id,
            "cold_start": False,
            "granularity": granularity,
            "negative_applied": granularity != "hybrid" and vec["negative"] is not None,
            "items": items,
        }

    async def _popular(
        self, user_id: str, k: int, tags: list[str], seen: list[str], events: int
    ) -> dict[str, Any]:
        # more candidates than k when filtering by tags (their tags live in Qdrant)
        ranked = self.popularity.top(k * 20 if tags else k, exclude=seen)
        payloads = await self.run(self.sink.get_items, [i for i, _ in ranked]) if ranked else {}
        items = []
        for item_id, score in ranked:
            payload = payloads.get(item_id, {})
            if tags and not set(tags) & set(payload.get("tags", [])):
                continue
            items.append(
                {
                    "item_id": item_id,
                    "title": payload.get("title"),
                    "tags": payload.get("tags", []),
                    "score": round(score, 6),
                    "p": None,
                    "why": {"popularity": "clicked most recently on this worker"},
                }
            )
            if len(items) == k:
                break
        return {
            "user_id": user_id,
            "cold_start": True,
            "cold_start_reason": (
                "unknown user"
                if events == 0
                else f"{events} events, fewer than {self.cold_start_min_events}"
            ),
            "items": items,
        }

    def interests(self, user_id: str) -> dict[str, Any]:
        user_id = user_id_of(user_id)
        record = self._record(user_id)
        if record is None:
            raise ApiError(404, f"unknown user {user_id!r}")
        st, now = record.state, time.time()
        return {
            "user_id": user_id,
            "top_terms": [[t, round(w, 6)] for t, w in st.top_terms(20)],
            "counts": st.counts,
            "first_event_ts": st.first_ts,
            "last_event_ts": st.last_ts,
            "weights": dict(zip(CHANNELS, [round(float(w), 6) for w in st.weights()], strict=True)),
            "freshness_s": {
                c: None if t is None else round(now - t, 3)
                for c, t in zip(CHANNELS, record.changed_at, strict=True)
            },
            "seen_items": st.seen_items()[:20],
        }

    async def similar(self, user_id: str, query: dict[str, str]) -> dict[str, Any]:
        user_id = user_id_of(user_id)
        k = int_param(query, "k", 10, 1, 100)
        record = self._record(user_id)
        fused = None if record is None else record.state.fused()
        if fused is None:
            raise ApiError(404, f"unknown user {user_id!r}")
        hits = await self.run(self.sink.nearest_users, fused, k, [user_id])
        return {
            "user_id": user_id,
            "users": [{"user_id": u, "similarity": round(s, 6)} for u, s in hits],
        }


def recommend_query(target: np.ndarray, negative: np.ndarray | None) -> np.ndarray:
    """The vector Qdrant's `average_vector` recommend query searches with: 2·v − n (v and n
    unit), or v without a negative; its cosine to an item is the score Qdrant returns.

    >>> recommend_query(np.array([1.0, 0.0]), np.array([0.0, 1.0])).tolist()
    [2.0, -1.0]
    """
    return target if negative is None else 2.0 * target - negative


def rerank_with_prior(
    hits: list[tuple[str, float, dict[str, Any], Any]],
    priors: list[float],
    weight: float,
    k: int,
) -> list[tuple[str, float, dict[str, Any], Any, float]]:
    """The k best by score + weight·prior (ties: the earlier hit), each with its prior.

    >>> [h[0] for h in rerank_with_prior([("a", 0.9, {}, None), ("b", 0.8, {}, None)],
    ...                                  [0.0, 1.0], 0.2, 2)]
    ['b', 'a']
    """
    blended = [(i, s + weight * q, p, v, q) for (i, s, p, v), q in zip(hits, priors, strict=True)]
    return sorted(blended, key=lambda h: -h[1])[:k]


def _why(
    item_vec: np.ndarray | None,
    vec: dict[str, np.ndarray | None],
    terms: dict[str, float],
    payload: dict[str, Any],
) -> dict[str, Any]:
    """The user granularity closest to the item, and the user's terms the item contains."""
    sims = {c: _cos(item_vec, vec[c]) for c in ("word", "sentence", "document")}
    known = {c: round(s, 4) for c, s in sims.items() if s is not None}
    best = max(known, key=known.__getitem__) if known else None
    item_terms = {t for t, _ in (payload.get("text") or {}).get("terms", [])}
    matched = sorted((t for t in terms if t in item_terms), key=lambda t: -terms[t])[:5]
    return {"granularity": best, "similarity": known, "terms": matched}
