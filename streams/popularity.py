"""Item popularity over a recent window: exponentially decayed click counts.

What cold-start users get. `score_i(t) = Σ exp(-λ (t - t_click))` over the item's clicks,
kept as one number per item anchored at a reference time (the same trick as the interest
state), so adding a click is O(1) and ranking needs no decay at all: every item shares the
factor exp(-λ (t - t_ref)).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable


class Popularity:
    """Decayed click counts per item (half-life in seconds of event time).

    >>> p = Popularity(half_life_s=10.0)
    >>> for item, t in [("a", 0.0), ("a", 0.0), ("b", 10.0)]:
    ...     p.add(item, t)
    >>> [(i, round(s, 3)) for i, s in p.top(2, at=10.0)]
    [('a', 1.0), ('b', 1.0)]
    >>> [i for i, _ in p.top(2, at=10.0, exclude={"a"})]
    ['b']
    """

    def __init__(self, half_life_s: float = 86_400.0, max_items: int = 200_000) -> None:
        self.lam = math.log(2) / half_life_s
        self.max_items = max_items
        self.t_ref: float | None = None
        self.latest = -math.inf
        self._score: dict[str, float] = {}
        self._top = 0.0  # the largest score at t_ref: all decay alike, so it stays the largest

    def __len__(self) -> int:
        return len(self._score)

    def add(self, item_id: str, ts: float) -> None:
        if self.t_ref is None:
            self.t_ref = ts
        if self.lam * (ts - self.t_ref) > 50:  # re-anchor before exp() grows large
            shrink = math.exp(-self.lam * (ts - self.t_ref))
            self._score = {i: s * shrink for i, s in self._score.items() if s * shrink > 1e-9}
            self._top *= shrink
            self.t_ref = ts
        score = self._score.get(item_id, 0.0) + math.exp(self.lam * (ts - self.t_ref))
        self._score[item_id] = score
        self._top = max(self._top, score)
        self.latest = max(self.latest, ts)
        if len(self._score) > self.max_items:  # forget the least popular tenth
            keep = heapq.nlargest(int(self.max_items * 0.9), self._score.items(), key=_score)
            self._score = dict(keep)

    def top(
        self, k: int, at: float | None = None, exclude: Iterable[str] = ()
    ) -> list[tuple[str, float]]:
        """The k most popular items (decayed counts at `at`, default the newest click)."""
        if self.t_ref is None:
            return []
        skip = set(exclude)
        t = self.latest if at is None else at
        f = math.exp(-self.lam * (t - self.t_ref))
        best = heapq.nlargest(
            k, ((i, s) for i, s in self._score.items() if i not in skip), key=_score
        )
        return [(i, s * f) for i, s in best]

    def prior(self, item_ids: Iterable[str], at: float | None = None) -> list[float]:
        """Popularity prior in [0, 1] per item: log1p(count) / log1p(the top count), with
        decayed counts at `at` (default the newest click); what `interest-stream eval`
        blends into the score (docs/evaluation.md).

        >>> p = Popularity(half_life_s=10.0)
        >>> for item in ["a", "a", "a", "b"]:
        ...     p.add(item, 0.0)
        >>> [round(x, 3) for x in p.prior(["a", "b", "never"])]
        [1.0, 0.5, 0.0]
        """
        ids = list(item_ids)
        if self.t_ref is None or self._top <= 0:
            return [0.0] * len(ids)
        t = self.latest if at is None else at
        f = math.exp(-self.lam * (t - self.t_ref))
        top = math.log1p(self._top * f)
        if top <= 0:
            return [0.0] * len(ids)
        return [math.log1p(self._score.get(i, 0.0) * f) / top for i in ids]


def _score(kv: tuple[str, float]) -> float:
    return kv[1]
