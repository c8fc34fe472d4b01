"""The text cache (streams/text_cache.py): bounded by entries and age, keyed by digests."""

from __future__ import annotations

import pytest

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
