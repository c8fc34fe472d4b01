"""How many messages the next micro-batch may take: a time budget, not a fixed count.

A batch's cost has a fixed part (the changelog and Qdrant writes of each changed user, the
commit) and a part per event, and the users of a bigger batch overlap more (bench workload:
0.56 changed users per event in batches of 2,000, 0.31 in 10,000), so under a backlog big
batches are cheaper per event. But a batch runs to its end before a rebalance or a stop
can proceed, and text costs ~1,000 times more than a click on a CPU: 2,000 messages of
which a third are texts take seconds to encode. So the cap is what the last batches
processed in `target_s`, between `min_n` and `max_n`, counted in units where a message
with text counts as `TEXT_COST` clicks (`message_cost`), so that a batch of clicks after
one of texts, or the other way round, is sized right at once: clicks under a backlog get
batches of up to 10,000, texts a few hundred. Below the cap nothing
changes: a batch is what arrived within `batch_within_s`, so at 1,000 events/s batches
stay at ~50 messages and freshness is unaffected.

bench/pipeline.py, 40,000 clicks, caps fixed at 2,000 / 5,000 / 10,000: 7,011 / 8,659 /
9,104 events/s consumed. The worker's default budget is 2 s (`batch_target_s`): on a CPU
a batch of texts encodes ~2x faster per text at 600 texts than at 50 (more padding-free
buckets, fewer calls), and it stays under the group's 3 s rebalance timeout, which a
batch must finish within before its partitions can move.

>>> sizer = BatchSizer(max_n=10_000, target_s=1.0, min_n=100, start_n=1_000)
>>> sizer.size
1000
>>> sizer.observe(1_000, 0.1)  # 10,000 events/s
>>> sizer.size
4000
>>> for _ in range(10):
...     sizer.observe(4_000, 0.4)
>>> sizer.size
10000
>>> sizer.observe(500, 2.5)  # texts: 200 events/s
>>> sizer.size
200
>>> sizer.observe(200, 0.02)  # clicks again: back up over a few batches
>>> sizer.size
800
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["TEXT_COST", "BatchSizer", "message_cost"]

# what a message with text to encode (search, comment, item) counts for in the cap, in
# clicks: on this 2-core CPU a text costs ~4 ms (MiniLM int8), a click ~0.1 ms; the cap
# learns the rate of these units, so being off by 2x only makes a batch off by < 2x
TEXT_COST = 25
_TEXT_TOPICS = frozenset({"events.search", "events.comment", "items"})


def message_cost(message: Any) -> int:
    """A raw Kafka message's cost in the batch cap (by its topic)."""
    return TEXT_COST if message.topic in _TEXT_TOPICS else 1


class BatchSizer:
    """The cap of the next batch: `target_s` seconds of work at the recent processing rate
    (the lower of the last batch's events per second and their moving average)."""

    def __init__(
        self,
        max_n: int,
        target_s: float = 1.0,
        min_n: int = 100,
        start_n: int = 1_000,
        smoothing: float = 0.3,
    ) -> None:
        if not 1 <= min_n <= max_n:
            raise ValueError(f"need 1 <= min_n <= max_n, got {min_n} and {max_n}")
        if target_s <= 0 or not 0 < smoothing <= 1:
            raise ValueError("target_s must be > 0 and smoothing in (0, 1]")
        self.max_n = max_n
        self.min_n = min_n
        self.target_s = target_s
        self.smoothing = smoothing
        self._size = min(max(start_n, min_n), max_n)
        self._rate: float | None = None  # events per second of processing

    @property
    def size(self) -> int:
        return self._size

    def observe(self, n: int, seconds: float) -> None:
        """A batch of cost `n` (`message_cost` summed) took `seconds` to process (and
        write)."""
        if n <= 0 or seconds <= 0:
            return
        rate = n / seconds
        if not math.isfinite(rate):  # a clock too coarse for the batch: nothing learnt
            return
        if self._rate is None:
            self._rate = rate
        else:
            self._rate += self.smoothing * (rate - self._rate)
        # down at once (a slow batch may be the first of many texts), up smoothly and at
        # most 4x a batch
        want = min(min(self._rate, rate) * self.target_s, 4 * self._size)
        self._size = int(min(max(want, self.min_n), self.max_n))
