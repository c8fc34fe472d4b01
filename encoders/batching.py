"""Length-bucketed batching: few padded tokens per forward pass."""

from __future__ import annotations

from collections.abc import Sequence


def length_buckets(lengths: Sequence[int], max_batch: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, shortest first.

    A batch closes at `max_batch` rows or when rows x longest length would pass
    `max_tokens`; a single row longer than `max_tokens` still gets a batch of its own.

    >>> length_buckets([5, 50, 6, 49, 7], max_batch=2, max_tokens=1000)
    [[0, 2], [4, 3], [1]]
    >>> length_buckets([10, 10, 10], max_batch=8, max_tokens=20)
    [[0, 1], [2]]
    """
    if max_batch < 1 or max_tokens < 1:
        raise ValueError("max_batch and max_tokens must be positive")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        # ascending order, so lengths[i] is the padded width once i joins the batch
        if cur and (len(cur) >= max_batch or (len(cur) + 1) * lengths[i] > max_tokens):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches
