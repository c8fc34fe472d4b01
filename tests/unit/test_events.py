import json
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import (
    MAX_MESSAGE_BYTES,
    MAX_TEXT_BYTES,
    ClickEvent,
    CommentEvent,
    InvalidEvent,
    ItemEvent,
    SearchEvent,
    parse_event,
)

NOW = time.time()


def click(**kw: object) -> bytes:
    base = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": NOW - 10}
    return json.dumps({**base, **kw}).encode()


def test_valid_events_of_every_type() -> None:
    assert isinstance(parse_event(click(dwell_ms=1200, rating=4, text="好看"), "click"), ClickEvent)
    s = parse_event({"type": "search", "event_id": "e", "user_id": "u", "ts": 1, "query": "科幻"})
    assert isinstance(s, SearchEvent) and s.query == "科幻"
    c = parse_event(
        {
            "type": "comment",
            "event_id": "e",
            "user_id": "u",
            "ts": 1,
            "text": "bad",
            "sentiment": -1,
        }
    )
    assert isinstance(c, CommentEvent) and c.sentiment == -1
    item = parse_event({"type": "item", "item_id": 5, "title": "Alien", "body": "In space."})
    assert isinstance(item, ItemEvent) and item.item_id == "5"
    assert item.text() == "Alien\nIn space."
    assert parse_event({"type": "delete", "user_id": "u"}).type == "delete"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b"\xff\xfe", "not valid UTF-8"),
        (b"[1, 2]", "expected a JSON object"),
        (click(ts="yesterday"), "ts must be a number"),
        (click(ts=True), "ts must be a number"),
        (click(ts=-5), "finite and >= 0"),
        (click(ts=NOW + 10 * 86400), "in the future"),
        (click(user_id="bad id with spaces"), "user_id"),
        (click(user_id=""), "user_id"),
        (click(user_id=1.5), "user_id"),
        (click(rating=9), "rating"),
        (click(dwell_ms=-1), "dwell_ms"),
        (click(text="x" * (MAX_TEXT_BYTES + 1)), "longer than"),
        (click(text="bell\x07"), "control characters"),
        (click(text="del\x7f and C1 \x85"), "control characters"),
        # the json module recurses once per level and refuses integers of > 4300 digits:
        # both used to escape parse_event and stop the worker's agent
        (b"[" * 100_000, "nested too deeply"),
        (click()[:-1] + b', "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
        (click()[:-1] + b', "n": ' + b"9" * 5000 + b"}", "invalid JSON"),
        (click()[:-1] + b', "junk": "' + b"a" * MAX_MESSAGE_BYTES + b'"}', "more than"),
        (json.dumps({"event_id": "e", "user_id": "u", "ts": 1}).encode(), "item_id"),
    ],
)
def test_invalid_clicks_have_reasons(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=reason):
        parse_event(raw, "click")


@pytest.mark.parametrize("text", ["\u200b\u200b", "\ufeff \u2060", " \u00a0\u3000"])
def test_texts_of_only_invisible_characters_are_blank(text: str) -> None:
    raw = json.dumps({"event_id": "e", "user_id": "u", "ts": 1, "query": text}).encode()
    with pytest.raises(InvalidEvent, match="blank"):
        parse_event(raw, "search")


def test_item_tags_are_short_and_printable() -> None:
    item = {"type": "item", "item_id": "i", "title": "t"}
    assert parse_event({**item, "tags": ["sci-fi", "x" * 64]}).tags == ["sci-fi", "x" * 64]
    with pytest.raises(InvalidEvent, match="tag longer"):
        parse_event({**item, "tags": ["x" * 65]})
    with pytest.raises(InvalidEvent, match="control"):
        parse_event({**item, "tags": ["a\x00b"]})


def test_nan_and_infinite_timestamps_are_rejected() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        event = {"type": "click", "event_id": "e", "user_id": "u", "item_id": "i", "ts": bad}
        with pytest.raises(InvalidEvent, match="finite"):
            parse_event(event)


def test_type_and_topic_must_agree() -> None:
    with pytest.raises(InvalidEvent, match="unknown event type"):
        parse_event({"type": "purchase", "user_id": "u"})
    with pytest.raises(InvalidEvent, match="does not match"):
        parse_event(click(type="search"), "click")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_any_bytes_either_parse_or_raise_invalid_event(raw: bytes) -> None:
    for kind in ("click", "search", "comment", "item", "delete", None):
        try:
            parse_event(raw, kind)
        except InvalidEvent as err:
            assert err.reason
