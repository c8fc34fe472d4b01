"""Hostile input for the worker (issue 9): hypothesis strategies for malformed Kafka
messages, valid events to mix them with, and one fuzz run against a running worker.

Used by tests/reliability/test_input_and_security.py (a CI-sized run) and bench/fuzz.py
(>= 10,000 messages). Everything is seeded: a seed always gives the same messages.

`run_fuzz`, against a worker already running on a broker:
1. publishes the items, then the valid user events for users `cl-*` alone (the clean run);
2. publishes the hostile messages and the same valid events for users `fz-*`, shuffled
   into one stream of raw bytes (the largest 2 MiB, so the producer's request limit is
   raised; the broker and the worker's consumer take them as they are);
3. waits until the worker consumed everything (it must stay up), reads `events.dlq` back
   and matches dead letters to the hostile messages by (topic, partition, offset);
4. compares every `fz-*` user with its `cl-*` twin: counts, and the cosine of each vector.
Users' states are independent, so the twins are a clean run of only the valid events.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from streams.embedded import DLQ_TOPIC, INPUT_TOPICS
from streams.events import MAX_MESSAGE_BYTES, MAX_TEXT_BYTES, TOPIC_TYPES
from streams.publish import json_records, read_records, send_records
from streams.supervisor import WorkerProcess
from streams.worker import DLQ_MAX_KEY, DLQ_MAX_VALUE, BatchResult, Message, Processor

T0 = 1_762_000_000.0  # Nov 2025: event times lie in the 30 days after
TYPE_TOPIC = {kind: topic for topic, kind in TOPIC_TYPES.items()}
ID = re.compile(r"[A-Za-z0-9_.:@\-]{1,128}")  # the schema's id rule
MIN_COSINE = 0.9999
MAX_REQUEST = 4 * 1024 * 1024  # producer limit for this run: aiokafka's default is 1 MiB
ERROR_CLASSES = {"InvalidEvent", "KeyMismatch", "EncodeError"}

ITEMS = {
    "fz-i1": ("Interstellar", "Astronauts travel through a wormhole near a black hole."),
    "fz-i2": ("流浪地球", "太阳即将毁灭，人类推着地球飞向新的星系。"),
    "fz-i3": ("Sourdough bread", "Bake a crusty sourdough loaf with a simple starter."),
    "fz-i4": ("红烧肉", "家常红烧肉的做法，五花肉慢炖入味。"),
    "fz-i5": ("Bond yields", "Government bond yields rose after the inflation report."),
    "fz-i6": ("Jazz at night", "A quiet trio plays standards in a small club."),
    "fz-i7": ("Mountain trails", "Hiking routes above the tree line, with maps."),
    "fz-i8": ("Chess openings", "The Sicilian defence explained move by move."),
}
# valid but unusual texts too: emoji, right-to-left, zero-width joiners inside words,
# tabs and newlines, a text longer than the encoder's 512 tokens
TEXTS = [
    "jazz piano records",
    "科幻电影推荐",
    "how to bake sourdough bread",
    "mountain hiking boots",
    "emoji fans 😀🎉 unite",
    "שלום right-to-left text",
    "zero\u200bwidth and\u200djoiners",
    "tabs\tand\nnew lines. Two sentences!",
    "Ünïcödé àccents façade",
    "chess: the Sicilian, again?",
    "bond yields and inflation",
    "红烧肉怎么做才好吃？",
    "I loved it, truly wonderful",
    "boring and far too long",
    "不好看，太无聊了。",
    "a long review of space films and their music, " * 120,
]
REQUIRED = {
    "click": ("event_id", "user_id", "item_id", "ts"),
    "search": ("event_id", "user_id", "ts", "query"),
    "comment": ("event_id", "user_id", "ts", "text"),
    "item": ("item_id", "title"),
}
TEXT_FIELDS = {
    "click": ("text",),
    "search": ("query",),
    "comment": ("text",),
    "item": ("title", "body"),
}
ID_FIELDS = {
    "click": ("event_id", "user_id", "item_id"),
    "search": ("event_id", "user_id"),
    "comment": ("event_id", "user_id"),
    "item": ("item_id",),
}
# topics where an event of a type misses a required field (never a valid other type)
WRONG_TOPICS = {
    "click": ("events.search", "items"),
    "search": ("events.click", "items"),
    "comment": ("events.search", "items"),
    "item": ("events.click", "events.search", "events.comment"),
}
# C0 controls but \t \n \r, DEL, C1 controls
CONTROL = [chr(c) for c in (*range(9), 11, 12, *range(14, 32), 127, *range(128, 160))]
BAD_IDS = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "u1\n", "u 1", "", "<script>", "ü"]


@dataclass(frozen=True)
class Raw:
    """One message as published: `category` says what makes it bad ("valid": nothing)."""

    topic: str
    key: bytes | None
    value: bytes | None
    category: str


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


def key_of(kind: str, obj: dict[str, Any]) -> bytes:
    return str(obj["item_id"] if kind == "item" else obj["user_id"]).encode()


# -- valid events ---------------------------------------------------------------------------


def items() -> list[dict[str, Any]]:
    return [
        {"type": "item", "item_id": i, "title": t, "body": b, "tags": ["fuzz"]}
        for i, (t, b) in ITEMS.items()
    ]


def valid_events(n: int, users: int, seed: int, marker: str) -> list[dict[str, Any]]:
    """About n valid click/search/comment events of users fz-u0..: event times out of
    order, ~5 % published twice (same event id); `marker` is in ~10 % of the texts."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        kind = rng.choices(["click", "search", "comment"], [5, 3, 2])[0]
        ev: dict[str, Any] = {
            "type": kind,
            "event_id": f"ev-{i}",
            "user_id": f"fz-u{rng.randrange(users)}",
            "ts": round(T0 + rng.uniform(0, 30 * 86400), 3),
        }
        text = rng.choice(TEXTS) + (f" {marker}" if rng.random() < 0.1 else "")
        if kind == "click":
            ev["item_id"] = rng.choice(list(ITEMS))
            if rng.random() < 0.3:
                ev["rating"] = rng.randint(1, 5)
            if rng.random() < 0.3:
                ev["dwell_ms"] = rng.randint(0, 60_000)
        elif kind == "search":
            ev["query"] = text
        else:
            ev["text"] = text
            if rng.random() < 0.5:
                ev["sentiment"] = round(rng.uniform(-1, 1), 3)
            if rng.random() < 0.3:
                ev["item_id"] = rng.choice(list(ITEMS))
        out.append(ev)
        if rng.random() < 0.05:
            out.append(dict(ev))
    return out


def twin(user: str) -> str:
    """The clean run's name for a fuzz user."""
    return "cl-" + user.removeprefix("fz-")


def as_record(ev: dict[str, Any], user: str | None = None) -> tuple[str, str, dict[str, Any]]:
    """(topic, key, value object) of a replay-style event, for `user` if given."""
    obj = {k: v for k, v in ev.items() if k != "type"}
    if user is not None:
        obj["user_id"] = user
    return TYPE_TOPIC[ev["type"]], key_of(ev["type"], obj).decode(), obj


# -- hostile messages -----------------------------------------------------------------------


class Base:
    """The valid events hostile messages are made from, by type."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.users = sorted({e["user_id"] for e in events if "user_id" in e})
        self.by_kind: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            self.by_kind.setdefault(e["type"], []).append(e)

    def event(self, *kinds: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
        """(type, value object) of one of the events of `kinds` (default: any)."""
        pool = [e for k in kinds or tuple(self.by_kind) for e in self.by_kind.get(k, [])]
        return st.sampled_from(pool).map(lambda e: (e["type"], as_record(e)[2]))


def _replace(obj: dict[str, Any], field_name: str, literal: bytes) -> bytes:
    """JSON of obj with field_name's value written as `literal` (NaN, 1e400, 5,000 digits)."""
    return dumps({**obj, field_name: "@@LITERAL@@"}).replace(b'"@@LITERAL@@"', literal)


def _wrong_type(field_name: str) -> st.SearchStrategy[Any]:
    junk = st.one_of(
        st.none(),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    )
    if field_name == "ts":  # any number is a type the field takes
        return st.one_of(junk, st.booleans(), st.text(max_size=20))
    # ids take integers (kept as strings); no string field takes a float or a bool
    return st.one_of(junk, st.booleans(), st.floats(allow_nan=False))


def _bad_id() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(BAD_IDS),
        st.text(min_size=1, max_size=40).filter(lambda s: not ID.fullmatch(s)),
        st.builds(lambda c, n: c * n, st.sampled_from("aZ9_.:@-"), st.integers(129, 4000)),
        _wrong_type("user_id"),
    )


def _huge_text() -> st.SearchStrategy[str]:
    def build(unit: str, extra: int) -> str:
        return unit * (MAX_TEXT_BYTES // len(unit.encode()) + extra)

    units = st.sampled_from(["a", "é", "中", "😀", "word ", "\t"])
    return st.builds(build, units, st.integers(1, 30_000))


def _with_text_field(kind: str, obj: dict[str, Any], draw: Any) -> str:
    name = draw(st.sampled_from(TEXT_FIELDS[kind]))
    obj.setdefault(name, "plain words")
    return name


@st.composite
def hostile_message(draw: Any, base: Base) -> Raw:
    """One message the worker must dead-letter, of a category drawn by weight."""
    category = draw(st.sampled_from(WEIGHTED))
    topic, key, value = draw(BUILDERS[category](base))
    return Raw(topic, key, value, category)


def _msg(kind: str, obj: dict[str, Any], value: bytes | None) -> tuple[str, bytes, bytes | None]:
    return TYPE_TOPIC[kind], key_of(kind, obj), value


@st.composite
def garbage_bytes(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    key = draw(st.sampled_from(base.users)).encode()
    return draw(st.sampled_from(INPUT_TOPICS)), key, draw(st.binary(max_size=512))


@st.composite
def garbage_text(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    key = draw(st.sampled_from(base.users)).encode()
    return draw(st.sampled_from(INPUT_TOPICS)), key, draw(st.text(max_size=300)).encode()


@st.composite
def json_not_object(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    kind, obj = draw(base.event())
    doc = draw(
        st.one_of(
            st.integers(),
            st.floats(),
            st.text(max_size=40),
            st.booleans(),
            st.none(),
            st.lists(st.integers(), max_size=4),
            st.just([obj]),
        )
    )
    return _msg(kind, obj, json.dumps(doc).encode())


@st.composite
def truncated(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    kind, obj = draw(base.event())
    raw = dumps(obj)
    return _msg(kind, obj, raw[: draw(st.integers(0, len(raw) - 1))])


@st.composite
def invalid_utf8(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    """A byte >= 0x80 put at a character boundary of a string value is never valid UTF-8;
    also an encoded surrogate and an overlong slash."""
    kind, obj = draw(base.event())
    name = draw(st.sampled_from([k for k, v in obj.items() if isinstance(v, str)]))
    bad = draw(
        st.one_of(
            st.integers(0x80, 0xFF).map(lambda b: bytes([b])),
            st.sampled_from([b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80"]),
        )
    )
    raw = dumps({**obj, name: "@@BAD@@" + obj[name]}).replace(b"@@BAD@@", bad)
    return _msg(kind, obj, raw)


@st.composite
def bad_encoding(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    kind, obj = draw(base.event())
    text = json.dumps(obj, ensure_ascii=False)
    how = draw(st.sampled_from(["bom", "utf-16", "utf-32"]))
    raw = b"\xef\xbb\xbf" + text.encode() if how == "bom" else text.encode(how)
    return _msg(kind, obj, raw)


@st.composite
def wrong_type(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    kind, obj = draw(base.event())
    name = draw(st.sampled_from(REQUIRED[kind]))
    return _msg(kind, obj, dumps({**obj, name: draw(_wrong_type(name))}))


@st.composite
def missing_field(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    kind, obj = draw(base.event())
    name = draw(st.sampled_from(REQUIRED[kind]))
    return _msg(kind, obj, dumps({k: v for k, v in obj.items() if k != name}))


@st.composite
def huge_text(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    """A text over 20 KB (in UTF-8), up to ~120 KB."""
    kind, obj = draw(base.event())
    name = _with_text_field(kind, obj, draw)
    return _msg(kind, obj, dumps({**obj, name: draw(_huge_text())}))


@st.composite
def bad_id(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    """An id of the wrong characters (path traversal, newline, markup), too long (> 128),
    or of the wrong type; the message is keyed by it when it is the key."""
    kind, obj = draw(base.event())
    name = draw(st.sampled_from(ID_FIELDS[kind]))
    obj = {**obj, name: draw(_bad_id())}
    key = key_of(kind, obj) if isinstance(obj[name], str) else None
    return TYPE_TOPIC[kind], key, dumps(obj)


@st.composite
def bad_ts(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    """NaN, ±infinity (also as 1e400), negative, far in the future, an integer of 400
    digits. Items take no future check (their ts is optional): only the others there."""
    kind, obj = draw(base.event())
    literals = [b"NaN", b"Infinity", b"-Infinity", b"-1e400", b"-0.5", b"-" + b"9" * 400]
    if kind != "item":
        literals += [b"1e400", b"1" + b"0" * 400]
        number = st.one_of(
            st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False),
            st.floats(min_value=4e9, max_value=1e300),  # year 2096 on
            st.integers(max_value=-1),
            st.integers(min_value=4_000_000_000, max_value=10**30),
        )
        if draw(st.booleans()):
            return _msg(kind, obj, dumps({**obj, "ts": draw(number)}))
    return _msg(kind, obj, _replace(obj, "ts", draw(st.sampled_from(literals))))


@st.composite
def unknown_type(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    kind, obj = draw(base.event())
    other = st.one_of(
        st.text(max_size=15).filter(lambda t: t != kind),
        st.sampled_from(["like", "purchase", "delete", "item", "CLICK"]).filter(
            lambda t: t != kind
        ),
        st.integers(),
        st.none(),
        st.lists(st.integers(), max_size=2),
    )
    return _msg(kind, obj, dumps({**obj, "type": draw(other)}))


@st.composite
def control_chars(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    kind, obj = draw(base.event())
    name = _with_text_field(kind, obj, draw)
    text = obj[name]
    at = draw(st.integers(0, len(text)))
    c = draw(st.sampled_from(CONTROL))
    return _msg(kind, obj, dumps({**obj, name: text[:at] + c + text[at:]}))


@st.composite
def blank_text(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    """Whitespace and invisible format characters only (zero-width space, BOM, bidi)."""
    kind, obj = draw(base.event("search", "comment"))
    blank = st.text(alphabet=" \t\n\r\u00a0\u3000\u200b\u200d\u2060\ufeff\u202e", max_size=20)
    return _msg(kind, obj, dumps({**obj, TEXT_FIELDS[kind][0]: draw(blank)}))


@st.composite
def key_mismatch(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    """A valid event keyed by nothing, b"", another user, random bytes, or 1-100 KB."""
    kind, obj = draw(base.event())
    want = key_of(kind, obj)
    key = draw(
        st.one_of(
            st.none(),
            st.just(b""),
            st.sampled_from(base.users).map(str.encode),
            st.binary(min_size=1, max_size=64),
            st.builds(lambda b, n: bytes([b]) * n, st.integers(0, 255), st.integers(1000, 100_000)),
        ).filter(lambda k: k != want)
    )
    return TYPE_TOPIC[kind], key, dumps(obj)


@st.composite
def deep_nesting(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    """Thousands of nested arrays or objects, alone or in an extra field of a valid event
    (Python's json module recurses once per level)."""
    kind, obj = draw(base.event())
    d = draw(st.integers(2000, 60_000))
    nest = draw(
        st.sampled_from(
            [b"[" * d + b"]" * d, b"[" * d, b'{"a":' * d + b"1" + b"}" * d, b'{"a":[' * d]
        )
    )
    if draw(st.booleans()):
        return _msg(kind, obj, nest)
    return _msg(kind, obj, dumps(obj)[:-1] + b', "x": ' + nest + b"}")


@st.composite
def big_int(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    """An integer of more than 4,300 digits (Python's int/str conversion limit)."""
    kind, obj = draw(base.event())
    digits = b"9" * draw(st.integers(4301, 50_000))
    name = draw(st.sampled_from(["n", "ts"] if kind != "item" else ["n"]))
    return _msg(kind, obj, _replace(obj, name, digits))


@st.composite
def oversize(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    """A valid event padded by an ignored field to 256 KiB..1.2 MB."""
    kind, obj = draw(base.event())
    size = draw(st.integers(MAX_MESSAGE_BYTES + 1, 1_200_000))
    head = dumps(obj)[:-1] + b', "junk": "'
    return _msg(kind, obj, head + b"j" * (size - len(head) - 2) + b'"}')


@st.composite
def tombstone(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    kind, obj = draw(base.event())
    return _msg(kind, obj, None)


@st.composite
def bad_tags(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    kind, obj = draw(base.event("item"))
    tags = draw(
        st.one_of(
            st.just("not-a-list"),
            st.lists(st.just("t"), min_size=65, max_size=80),
            st.integers(65, 5000).map(lambda n: ["x" * n]),
            st.lists(st.sampled_from(CONTROL).map(lambda c: f"a{c}b"), min_size=1, max_size=3),
            st.lists(st.integers(), min_size=1, max_size=3),
        )
    )
    return _msg(kind, obj, dumps({**obj, "tags": tags}))


@st.composite
def out_of_range(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    kind, obj = draw(base.event("click", "comment"))
    fields = {
        "rating": st.one_of(st.floats(max_value=0.999), st.floats(min_value=5.001)),
        "sentiment": st.one_of(st.floats(max_value=-1.001), st.floats(min_value=1.001)),
        "dwell_ms": st.floats(max_value=-0.001),
    }
    name = draw(
        st.sampled_from(["rating", "dwell_ms"] if kind == "click" else ["rating", "sentiment"])
    )
    return _msg(kind, obj, dumps({**obj, name: draw(fields[name])}))


@st.composite
def wrong_topic(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    kind, obj = draw(base.event())
    return draw(st.sampled_from(WRONG_TOPICS[kind])), key_of(kind, obj), dumps(obj)


@st.composite
def bad_delete(draw: Any, base: Base) -> tuple[str, bytes | None, bytes | None]:
    """users.delete with an id that is no user id (so it deletes nobody)."""
    user = draw(_bad_id())
    key = user.encode() if isinstance(user, str) else draw(st.sampled_from(base.users)).encode()
    return "users.delete", key, dumps({"user_id": user})


# category -> (strategy of (topic, key, value), weight)
CATEGORIES: dict[str, tuple[Any, int]] = {
    "garbage_bytes": (garbage_bytes, 6),
    "garbage_text": (garbage_text, 4),
    "json_not_object": (json_not_object, 3),
    "truncated_json": (truncated, 6),
    "invalid_utf8": (invalid_utf8, 6),
    "bad_encoding": (bad_encoding, 2),
    "wrong_type": (wrong_type, 8),
    "missing_field": (missing_field, 6),
    "huge_text": (huge_text, 3),
    "bad_id": (bad_id, 7),
    "bad_ts": (bad_ts, 8),
    "unknown_type": (unknown_type, 4),
    "control_chars": (control_chars, 6),
    "blank_text": (blank_text, 3),
    "key_mismatch": (key_mismatch, 6),
    "deep_nesting": (deep_nesting, 2),
    "big_int": (big_int, 2),
    "oversize": (oversize, 1),
    "tombstone": (tombstone, 2),
    "bad_tags": (bad_tags, 3),
    "out_of_range": (out_of_range, 4),
    "wrong_topic": (wrong_topic, 4),
    "bad_delete": (bad_delete, 3),
}
BUILDERS = {name: strategy for name, (strategy, _) in CATEGORIES.items()}
WEIGHTED = [name for name, (_, w) in CATEGORIES.items() for _ in range(w)]


def one_megabyte(base: Base) -> list[Raw]:
    """The 1 MB payloads, always there: a valid event padded to exactly 1 MiB, 1 MiB of
    random bytes, and a 2 MiB comment text."""
    kind, obj = "search", as_record(base.by_kind["search"][0])[2]
    head = dumps(obj)[:-1] + b', "junk": "'
    mib = 1024 * 1024
    padded = head + b"j" * (mib - len(head) - 2) + b'"}'
    noise = random.Random(1).randbytes(mib)
    comment = as_record(base.by_kind["comment"][0])[2]
    return [
        Raw("events.search", key_of(kind, obj), padded, "one_mebibyte"),
        Raw("events.click", key_of(kind, obj), noise, "one_mebibyte"),
        Raw(
            "events.comment",
            key_of("comment", comment),
            dumps({**comment, "text": "x" * 2 * mib}),
            "one_mebibyte",
        ),
    ]


def hostile_messages(base: Base, n: int, seed: int) -> list[Raw]:
    """n hostile messages drawn by hypothesis (fixed seed, no database: the same n and
    seed always give the same messages), plus the three 1 MB payloads."""
    out: list[Raw] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_message(base))
    def collect(raw: Raw) -> None:
        out.append(raw)

    collect()
    return out[:n] + one_megabyte(base)


def rejection(raw: Raw) -> str | None:
    """Why the worker's validation (schema and key rule) rejects `raw`; None if it takes
    it. The same code the worker runs, in this process: a generator mistake shows here,
    before anything is published."""
    res = BatchResult()
    msg = Message(raw.topic, 0, 0, raw.key, raw.value)
    if Processor(None, None)._validate([msg], res):  # type: ignore[arg-type]
        return None
    return res.dead_letters[0].reason


# -- a run against a worker -----------------------------------------------------------------


@dataclass
class FuzzReport:
    tried: Counter[str] = field(default_factory=Counter)  # hostile messages by category
    dead_lettered: Counter[str] = field(default_factory=Counter)  # of those, found in the DLQ
    missing: list[Raw] = field(default_factory=list)  # hostile, not in the DLQ
    wrong_dead_letters: list[str] = field(default_factory=list)  # bad DLQ records
    valid_dead_lettered: int = 0  # valid events found in the DLQ
    errors: Counter[str] = field(default_factory=Counter)  # DLQ error classes
    valid: int = 0  # valid user events published (the clean run got the same)
    totals: dict[str, int] = field(default_factory=dict)  # /healthz totals, this run only
    invariant_ok: bool = False
    users: int = 0
    min_cosine: float = 1.0
    count_mismatches: list[str] = field(default_factory=list)
    published_bytes: int = 0
    largest: int = 0
    seconds: float = 0.0  # publishing the mix until the worker was idle

    @property
    def bad(self) -> int:
        return sum(self.tried.values())

    def lines(self) -> list[str]:
        t = self.totals
        out = [
            f"bad inputs tried {self.bad:,}, dead-lettered {sum(self.dead_lettered.values()):,}"
            f" (missing {len(self.missing)}, valid events dead-lettered"
            f" {self.valid_dead_lettered}); DLQ error classes {dict(self.errors)}",
            f"mixed with {self.valid:,} valid events; {self.published_bytes / 2**20:,.1f} MiB"
            f" published, largest message {self.largest:,} bytes; worker idle"
            f" {self.seconds:.1f} s after publishing began",
            "totals: "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(t.items()))
            + f"; consumed = applied + duplicates + erased + dead_lettered + parked + items"
            f" + deletes: {self.invariant_ok}",
            f"{self.users} users vs their clean-run twins: min cosine {self.min_cosine:.6f},"
            f" count mismatches {len(self.count_mismatches)}",
            "by category (tried/dead-lettered): "
            + ", ".join(f"{c} {self.tried[c]}/{self.dead_lettered[c]}" for c in sorted(self.tried)),
        ]
        return out


def _cos(a: Any, b: Any) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


def invariant(t: dict[str, int]) -> bool:
    kinds = ("applied", "duplicates", "erased", "dead_lettered", "parked", "items", "deletes")
    return t.get("consumed", 0) == sum(t.get(k, 0) for k in kinds)


def check_dead_letter(doc: dict[str, Any], raw: Raw) -> str | None:
    """What is wrong with the dead letter of `raw`, or None."""
    value = raw.value or b""
    if not doc.get("reason") or doc.get("error") not in ERROR_CLASSES:
        return f"no reason or error class: {doc.get('reason')!r} {doc.get('error')!r}"
    if base64.b64decode(doc["value_b64"]) != value[:DLQ_MAX_VALUE]:
        return "value_b64 is not the original bytes"
    if doc["value_bytes"] != len(value) or doc["value_sha256"] != hashlib.sha256(value).hexdigest():
        return "value_bytes/value_sha256 do not describe the original"
    key = None if raw.key is None else base64.b64encode(raw.key[:DLQ_MAX_KEY]).decode()
    if doc["key"] != key:
        return "key is not the original's"
    return None


def run_fuzz(
    bootstrap: str,
    worker: WorkerProcess,
    n: int,
    *,
    seed: int = 9,
    valid: int | None = None,
    users: int = 24,
    marker: str = "",
    timeout: float = 600.0,
) -> FuzzReport:
    """Publish n hostile messages mixed with valid events to a running worker; see the
    module docstring. Raises AssertionError if a hostile message is one the schema
    accepts (a generator mistake), before publishing anything."""
    events = valid_events(valid if valid is not None else max(200, n // 10), users, seed, marker)
    base = Base([*items(), *events])
    hostile = hostile_messages(base, n, seed)
    accepted = [r for r in hostile if rejection(r) is None]
    assert not accepted, f"the generator made messages the schema accepts: {accepted[:3]}"

    report = FuzzReport(valid=len(events))
    report.tried.update(r.category for r in hostile)
    before = worker.health()["totals"]
    sent = asyncio.run(send_records(bootstrap, json_records([as_record(e) for e in items()])))
    clean = [as_record(e, twin(e["user_id"])) for e in events]
    sent += asyncio.run(send_records(bootstrap, json_records(clean)))
    worker.wait_idle(consumed=before.get("consumed", 0) + len(sent), timeout=timeout)

    mixed = [Raw(*r, "valid") for r in json_records([as_record(e) for e in events])]
    mixed += hostile
    random.Random(seed).shuffle(mixed)
    report.published_bytes = sum(len(r.value or b"") + len(r.key or b"") for r in mixed)
    report.largest = max(len(r.value or b"") for r in mixed)
    started = time.monotonic()
    meta = asyncio.run(
        send_records(
            bootstrap, [(r.topic, r.key, r.value) for r in mixed], max_request_size=MAX_REQUEST
        )
    )
    h = worker.wait_idle(
        consumed=before.get("consumed", 0) + len(sent) + len(mixed), timeout=timeout
    )
    report.seconds = time.monotonic() - started
    report.totals = _delta(h["totals"], before)
    report.invariant_ok = invariant(h["totals"])

    where = {(r.topic, m.partition, m.offset): r for r, m in zip(mixed, meta, strict=True)}
    letters = asyncio.run(
        read_records(bootstrap, DLQ_TOPIC, expect=h["totals"]["dead_lettered"], timeout=120)
    )
    found: set[tuple[str, int, int]] = set()
    for m in letters:
        doc = json.loads(m.value)
        pos = (doc["topic"], doc["partition"], doc["offset"])
        raw = where.get(pos)
        if raw is None:
            continue  # an earlier run's dead letter
        if raw.category == "valid":
            report.valid_dead_lettered += 1
            continue
        if pos in found:
            report.wrong_dead_letters.append(f"{pos}: dead-lettered twice")
            continue
        found.add(pos)
        report.dead_lettered[raw.category] += 1
        report.errors[doc["error"]] += 1
        if (problem := check_dead_letter(doc, raw)) is not None:
            report.wrong_dead_letters.append(f"{pos} {raw.category}: {problem}")
    report.missing = [r for pos, r in where.items() if r.category != "valid" and pos not in found]

    for user in sorted({e["user_id"] for e in events}):
        status, got = worker.get(f"/users/{user}/vectors")
        status_clean, want = worker.get(f"/users/{twin(user)}/vectors")
        report.users += 1
        if status != 200 or status_clean != 200 or got["counts"] != want["counts"]:
            report.count_mismatches.append(f"{user}: {status} {got} vs {status_clean} {want}")
            continue
        for channel, vec in want["vectors"].items():
            if vec is None or got["vectors"][channel] is None:
                if vec is not got["vectors"][channel]:
                    report.count_mismatches.append(f"{user}: {channel} present in one run only")
                continue
            report.min_cosine = min(report.min_cosine, _cos(got["vectors"][channel], vec))
    return report
