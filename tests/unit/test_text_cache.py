"""The text cache (streams/text_cache.py): bounded by entries and age, keyed by digests."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.text_cache import TextCache


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_least_recently_used_entries_go_first():
    c = TextCache[str](max_entries=3, max_age_s=60)
    for t in "abc":
        c.put("query", t, t.upper())
    assert c.get("query", "a") == "A"  # now the most recent
    c.put("query", "d", "D")
    assert [c.get("query", t) for t in "abcd"] == ["A", None, "C", "D"]
    assert len(c) == 3


def test_kinds_are_kept_apart():
    c = TextCache[str](max_entries=10, max_age_s=60)
    c.put("query", "rust", "q")
    c.put("passage", "rust", "p")
    assert (c.get("query", "rust"), c.get("passage", "rust")) == ("q", "p")


def test_entries_expire_after_max_age():
    clock = Clock()
    c = TextCache[int](max_entries=10, max_age_s=5, clock=clock)
    c.put("query", "old", 1)
    clock.t = 4.0
    c.put("query", "new", 2)
    assert c.get("query", "old") == 1  # a hit does not renew it
    clock.t = 5.5
    assert c.get("query", "old") is None and len(c) == 1
    assert c.get("query", "new") == 2


def test_keys_hold_no_text_and_differ_between_processes():
    a, b = TextCache[int](10, 60), TextCache[int](10, 60)
    text = "my very private search"
    a.put("query", text, 1)
    (key,) = a._entries
    assert len(key) == 16 and text.encode() not in key and b"private" not in key
    assert a._key("query", text) != b._key("query", text)  # a key drawn per cache


def test_zero_entries_turns_it_off_and_clear_empties_it():
    off = TextCache[int](0, 60)
    off.put("query", "x", 1)
    assert off.get("query", "x") is None and len(off) == 0
    on = TextCache[int](10, 60)
    on.put("query", "x", 1)
    on.clear()
    assert on.get("query", "x") is None


def test_texts_that_are_not_valid_unicode_still_get_a_key():
    c = TextCache[int](10, 60)
    c.put("query", "lone \ud800 surrogate", 1)
    assert c.get("query", "lone \ud800 surrogate") == 1


@pytest.mark.parametrize("entries, age", [(-1, 60), (10, 0), (10, float("nan"))])
def test_bad_bounds_are_refused(entries, age):
    with pytest.raises(ValueError):
        TextCache[int](entries, age)


ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "get", "get", "tick"]),
        st.sampled_from(["query", "passage"]),
        st.sampled_from(["a", "b", "语"]),  # few keys: hits, evictions and expiries all happen
        st.floats(0, 2),
    ),
    min_size=4,
    max_size=40,
)


@settings(max_examples=500, deadline=None)
@given(ops=ops, max_entries=st.integers(0, 4))
def test_matches_a_reference_lru_with_ages(ops, max_entries):
    """Against a plain model: an ordered dict by recency, entries dropped past their age."""
    clock = Clock()
    cache = TextCache[int](max_entries, max_age_s=5, clock=clock)
    model: OrderedDict[tuple[str, str], tuple[float, int]] = OrderedDict()
    for n, (op, kind, text, dt) in enumerate(ops):
        key = (kind, text)
        if op == "tick":
            clock.t += dt
        elif op == "put":
            cache.put(kind, text, n)
            if max_entries:
                model[key] = (clock.t, n)
                model.move_to_end(key)
                while len(model) > max_entries:
                    model.popitem(last=False)
        else:
            want = None
            if key in model:
                if clock.t - model[key][0] > 5:
                    del model[key]
                else:
                    want = model[key][1]
                    model.move_to_end(key)
            assert cache.get(kind, text) == want
        assert len(cache) == len(model) <= max_entries
