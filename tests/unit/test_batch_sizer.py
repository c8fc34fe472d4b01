"""BatchSizer: the micro-batch cap follows a time budget (pure code, no Kafka)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.batch_sizer import BatchSizer


def test_a_backlog_of_clicks_grows_the_cap_to_the_maximum_in_a_few_batches() -> None:
    sizer = BatchSizer(max_n=10_000, target_s=1.0)
    sizes = []
    for _ in range(6):
        n = sizer.size
        sizer.observe(n, n / 12_000 + 0.05)  # 12,000 events/s plus a fixed cost per batch
        sizes.append(sizer.size)
    assert sizes[0] == 4_000 and sizes[-1] == 10_000
    assert sizes == sorted(sizes)


def test_a_slow_batch_of_texts_shrinks_the_cap_at_once_to_the_time_budget() -> None:
    sizer = BatchSizer(max_n=10_000, target_s=1.0, start_n=10_000)
    sizer.observe(10_000, 0.8)
    sizer.observe(3_000, 10.0)  # 300 events/s: a third of them texts to encode
    assert sizer.size == 300


def test_the_cap_never_leaves_its_bounds_nor_grows_more_than_4x_a_batch() -> None:
    sizer = BatchSizer(max_n=500, target_s=1.0, min_n=50, start_n=100)
    sizer.observe(100, 1e-6)
    assert sizer.size == 400
    sizer.observe(1, 1e9)
    assert sizer.size == 50
    with pytest.raises(ValueError):
        BatchSizer(max_n=10, min_n=20)


@given(
    batches=st.lists(
        st.tuples(st.integers(0, 20_000), st.floats(0, 100, allow_nan=False)), max_size=30
    ),
    max_n=st.integers(1, 20_000),
)
def test_any_sequence_of_batches_keeps_the_cap_within_bounds(batches, max_n) -> None:
    sizer = BatchSizer(max_n=max_n, min_n=min(100, max_n))
    for n, seconds in batches:
        sizer.observe(n, seconds)
        assert min(100, max_n) <= sizer.size <= max_n
