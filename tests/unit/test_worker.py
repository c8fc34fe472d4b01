"""The worker's batch logic (streams/worker.py) with a deterministic stand-in encoder.

The encoder and item store here are tiny pure stand-ins (hash -> vector); the real encoder,
broker and Qdrant run in tests/integration/test_pipeline.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from typing import Any

import numpy as np
import pytest
from stand_ins import Encoded

from streams.events import ItemEvent, parse_event
from streams.profile import encoded_event
from streams.record import UserRecord
from streams.state import InterestState, StateParams, TextVectors
from streams.worker import DLQ_MAX_KEY, DLQ_MAX_VALUE, DeadLetter, Message, Processor

DIM = 8
PARAMS = StateParams()


def vec(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


class HashEncoder:
    dim = DIM

    def __init__(self, fail_on: str | None = None) -> None:
        self.fail_on = fail_on
        self.calls: list[tuple[str, int]] = []

    def encode(self, texts: list[str], kind: str = "passage") -> list[Encoded]:
        self.calls.append((kind, len(texts)))
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise ValueError(f"cannot encode {self.fail_on!r}")
        out = []
        for t in texts:
            words = tuple(t.split())
            wv = np.stack([vec(w) for w in words])
            out.append(Encoded(words, wv, vec(kind + t)[None, :], vec("doc" + t)))
        return out


class Items:
    def __init__(self) -> None:
        self.data: dict[str, tuple[str, TextVectors]] = {}

    async def get(self, item_ids):
        return {i: self.data[i][1] for i in item_ids if i in self.data}

    def is_current(self, item_id: str, text: str) -> bool:
        return item_id in self.data and self.data[item_id][0] == text

    def put(self, item: ItemEvent, vectors: TextVectors) -> None:
        self.data[item.item_id] = (item.text(), vectors)


class Table:
    """A dict standing in for the Faust table: user -> record bytes."""

    def __init__(self) -> None:
        self.rows: dict[str, bytes] = {}

    def load(self, user: str, context: Message) -> bytes | None:
        return self.rows.get(user)

    def commit(self, res) -> None:
        for user, w in res.writes.items():
            assert w.data == w.record.to_bytes()
            self.rows[user] = w.data

    def state(self, user: str) -> InterestState:
        return UserRecord.from_bytes(self.rows[user], PARAMS).state


TOPIC = {"click": "events.click", "search": "events.search", "comment": "events.comment"}
TOPIC |= {"item": "items", "delete": "users.delete"}


class Stream:
    """Assigns offsets per topic and publish timestamps as Kafka would (one partition each)."""

    def __init__(self) -> None:
        self.next: dict[str, int] = {}
        self.clock = 1_700_000_000.0

    def msg(self, kind: str, key: str | None = None, **fields: Any) -> Message:
        topic = TOPIC[kind]
        offset = self.next.get(topic, 0)
        self.next[topic] = offset + 1
        if key is None:
            key = fields.get("item_id") if kind == "item" else fields.get("user_id")
        self.clock += 0.001
        return Message(topic, 0, offset, key.encode(), json.dumps(fields).encode(), self.clock)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def run(proc: Processor, table: Table, messages: list[Message]):
    res = asyncio.run(proc.process(messages, table.load))
    table.commit(res)
    return res


def invariant(proc: Processor) -> None:
    t = proc.totals
    handled = t["applied"] + t["duplicates"] + t["erased"] + t["dead_lettered"] + t["parked"]
    assert t["consumed"] == handled + t["items"] + t["deletes"], dict(t)


def setup(**kw):
    items = Items()
    return Processor(HashEncoder(), items, PARAMS, **kw), items, Table(), Stream()


def test_a_batch_applies_clicks_searches_and_comments_like_sequential_updates():
    proc, _, table, s = setup()
    msgs = [
        s.msg("item", item_id="m1", title="space travel film"),
        s.msg("click", event_id="e1", user_id="u1", item_id="m1", ts=100.0, rating=5),
        s.msg("search", event_id="e2", user_id="u1", ts=50.0, query="black hole movie"),
        s.msg("comment", event_id="e3", user_id="u2", ts=70.0, text="boring and awful", rating=1),
    ]
    res = run(proc, table, msgs)
    assert res.counts["applied"] == 3 and res.counts["items"] == 1
    assert set(res.updated) == {"u1", "u2"}
    invariant(proc)
    # the same events through InterestState.update, one by one
    enc = HashEncoder()
    tv = {
        t: TextVectors.of(enc.encode([t], k)[0])
        for t, k in [("space travel film", "passage"), ("black hole movie", "query")]
    }
    ref = InterestState(DIM, PARAMS)
    ref.update(encoded_event(parse_event(msgs[1].value, "click"), tv["space travel film"]))
    ref.update(encoded_event(parse_event(msgs[2].value, "search"), tv["black hole movie"]))
    got = table.state("u1")  # stored as float16 directions: equal to float16 precision
    assert cos(got.fused(), ref.fused()) > 0.99999
    assert got.counts == ref.counts
    assert table.state("u2").counts["negative"] == 1
    # the item was encoded once, the query once: one encoder call per kind
    assert proc.encoder.calls == [("passage", 1), ("query", 2)]


def test_bad_messages_become_dead_letters_with_reasons_and_the_rest_applies():
    proc, _, table, s = setup()
    good = s.msg("search", event_id="e1", user_id="u1", ts=1.0, query="jazz")
    bad = [
        Message("events.click", 0, 90, b"u1", b"{not json"),
        Message("events.click", 0, 91, b"u1", b"\xff\xfe"),
        Message("events.search", 0, 92, b"u1", json.dumps({"event_id": "x"}).encode()),
        Message("events.search", 0, 93, b"u1", None),
        s.msg("search", key="someone-else", event_id="e9", user_id="u1", ts=1.0, query="q"),
        Message("events.unknown", 0, 1, b"u1", b"{}"),
    ]
    res = run(proc, table, [bad[0], good, *bad[1:]])
    reasons = [d.reason for d in res.dead_letters]
    assert len(reasons) == 6 and res.counts["applied"] == 1
    assert "invalid JSON" in reasons[0] and "UTF-8" in reasons[1]
    assert "Field required" in reasons[2] and "tombstone" in reasons[3]
    assert "expected its user_id 'u1'" in reasons[4] and "not an input topic" in reasons[5]
    doc = json.loads(res.dead_letters[0].to_bytes())
    assert doc["offset"] == 90 and doc["value"] == "{not json" and doc["error"] == "InvalidEvent"
    invariant(proc)


def test_redelivered_offsets_and_republished_event_ids_change_nothing():
    proc, _, table, s = setup()
    msgs = [
        s.msg("search", event_id=f"e{i}", user_id="u1", ts=float(i), query=f"q{i}")
        for i in range(5)
    ]
    run(proc, table, msgs)
    before = table.rows["u1"]
    res = run(proc, table, msgs[2:])  # a restart re-reads uncommitted offsets
    # nothing is applied again, but the record is written again, unchanged: the crashed
    # worker may have stored it locally without it reaching the changelog topic
    assert res.counts["duplicates"] == 3 and res.counts["applied"] == 0
    assert set(res.writes) == {"u1"} and res.writes["u1"].data == before and not res.updated
    assert table.rows["u1"] == before
    again = s.msg("search", event_id="e1", user_id="u1", ts=1.0, query="q1")  # new offset
    res = run(proc, table, [again])
    assert res.counts["duplicates"] == 1 and res.counts["applied"] == 0
    assert table.state("u1").counts == UserRecord.from_bytes(before, PARAMS).state.counts
    invariant(proc)


def test_a_click_on_an_unknown_item_waits_for_it_and_then_applies():
    clock = [1000.0]
    proc, _, table, s = setup(clock=lambda: clock[0])
    click = s.msg("click", event_id="e1", user_id="u1", item_id="m7", ts=5.0)
    res = run(proc, table, [click])
    assert res.counts["parked"] == 1 and not res.updated
    assert len(UserRecord.from_bytes(table.rows["u1"], PARAMS).parked) == 1
    assert run(proc, table, [click]).counts["duplicates"] == 1  # re-delivered while parked
    run(proc, table, [s.msg("item", item_id="m7", title="a quiet drama")])
    record = UserRecord.from_bytes(table.rows["u1"], PARAMS)
    res = asyncio.run(proc.resume({"u1": (record, click)}))
    table.commit(res)
    assert res.counts["applied"] == 1 and "u1" in res.updated
    st = table.state("u1")
    assert st.counts["click"] == 1 and st.vector("document") is not None
    assert not UserRecord.from_bytes(table.rows["u1"], PARAMS).parked
    invariant(proc)


def test_a_click_whose_item_never_arrives_is_dead_lettered_after_the_wait():
    clock = [1000.0]
    proc, _, table, s = setup(clock=lambda: clock[0], park_max_wait_s=30)
    click = s.msg("click", event_id="e1", user_id="u1", item_id="gone", ts=5.0)
    run(proc, table, [click])
    record = UserRecord.from_bytes(table.rows["u1"], PARAMS)
    clock[0] += 10
    assert not asyncio.run(proc.resume({"u1": (record, click)})).dead_letters
    clock[0] += 30
    res = asyncio.run(proc.resume({"u1": (record, click)}))
    table.commit(res)
    assert [d.error for d in res.dead_letters] == ["ItemNotFound"]
    assert "not seen within 30 s" in res.dead_letters[0].reason
    assert res.dead_letters[0].message.offset == click.offset
    invariant(proc)


def test_parking_is_bounded_per_user():
    proc, _, table, s = setup(park_max_per_user=2)
    clicks = [
        s.msg("click", event_id=f"e{i}", user_id="u1", item_id=f"x{i}", ts=1.0) for i in range(3)
    ]
    res = run(proc, table, clicks)
    assert res.counts["parked"] == 2 and res.counts["dead_lettered"] == 1
    invariant(proc)


def test_parked_bytes_are_bounded_per_user():
    """Parked clicks live in the user's record, written as one changelog message."""
    proc, _, table, s = setup(park_max_bytes=1000)
    clicks = [  # no text: a click with a text of its own does not wait for its item
        s.msg("click", event_id=f"e{i}", user_id="u1", item_id=f"x{i}", ts=1.0, note="n" * 300)
        for i in range(4)
    ]
    res = run(proc, table, clicks)
    assert res.counts["parked"] == 2 and res.counts["dead_lettered"] == 2
    assert "bytes) already wait" in res.dead_letters[0].reason
    invariant(proc)


def test_a_dead_letter_fits_in_one_kafka_message():
    raw = b"\x01" * (4 * DLQ_MAX_VALUE)  # JSON-escaped text would be 6x that
    dl = DeadLetter(Message("events.click", 0, 7, b"k" * 10**6, raw), "r" * 10**6, "X")
    data = dl.to_bytes()
    doc = json.loads(data)
    assert len(data) < 1_000_000 and len(dl.key) == DLQ_MAX_KEY
    assert doc["truncated"] and doc["value_bytes"] == len(raw) and doc["value"] is None
    assert base64.b64decode(doc["value_b64"]) == raw[:DLQ_MAX_VALUE]
    assert doc["value_sha256"] == hashlib.sha256(raw).hexdigest()


def test_deletion_erases_and_redelivered_older_events_do_not_bring_the_user_back():
    proc, _, table, s = setup()
    old = [
        s.msg("search", event_id=f"e{i}", user_id="u1", ts=float(i), query="secret hobby")
        for i in range(3)
    ]
    run(proc, table, old)
    res = run(proc, table, [s.msg("delete", user_id="u1")])
    assert res.deleted == {"u1"} and not res.updated
    record = UserRecord.from_bytes(table.rows["u1"], PARAMS)
    assert record.erased and record.state.last_ts is None and not record.state.top_terms()
    assert b"secret" not in table.rows["u1"]
    res = run(proc, table, old)  # Kafka re-delivers what was not committed before a crash
    assert res.counts["duplicates"] == 3 and not res.updated
    res = run(proc, table, [s.msg("search", event_id="n1", user_id="u1", ts=9.0, query="new")])
    assert res.updated == {"u1": 9.0}
    assert table.state("u1").counts["search"] == 1
    invariant(proc)


def test_events_before_a_deletion_in_the_same_batch_are_erased_with_it():
    proc, _, table, s = setup()
    msgs = [
        s.msg("search", event_id="e1", user_id="u1", ts=1.0, query="before"),
        s.msg("delete", user_id="u1"),
        s.msg("search", event_id="e2", user_id="u1", ts=2.0, query="after"),
    ]
    res = run(proc, table, msgs)
    assert res.deleted == set() and res.updated == {"u1": 2.0}
    st = table.state("u1")
    assert st.counts["search"] == 1 and [t for t, _ in st.top_terms()] == ["after"]


def test_a_text_the_encoder_rejects_is_dead_lettered_alone():
    items = Items()
    proc = Processor(HashEncoder(fail_on="poison"), items, PARAMS)
    table, s = Table(), Stream()
    msgs = [
        s.msg("search", event_id="e1", user_id="u1", ts=1.0, query="fine words"),
        s.msg("search", event_id="e2", user_id="u1", ts=2.0, query="poison pill"),
    ]
    res = run(proc, table, msgs)
    assert res.counts["applied"] == 1
    assert [d.error for d in res.dead_letters] == ["EncodeError"]
    assert "cannot encode" in res.dead_letters[0].reason
    invariant(proc)


def test_one_bad_text_among_many_costs_a_few_encoder_calls_not_one_per_text():
    encoder = HashEncoder(fail_on="poison")
    proc, table, s = Processor(encoder, Items(), PARAMS), Table(), Stream()
    msgs = [
        s.msg("search", event_id=f"e{i}", user_id=f"u{i}", ts=1.0, query=f"words {i}")
        for i in range(64)
    ]
    msgs.append(s.msg("search", event_id="bad", user_id="u0", ts=2.0, query="poison pill"))
    res = run(proc, table, msgs)
    assert res.counts["applied"] == 64 and [d.error for d in res.dead_letters] == ["EncodeError"]
    assert len(encoder.calls) <= 1 + 2 * 7, encoder.calls  # halves down to the one bad text


def test_a_deletion_arriving_before_earlier_published_events_still_erases_them():
    """Deletions have their own topic: Kafka may deliver them before events published
    earlier on other topics. Publish time decides, not arrival."""
    proc, _, table, s = setup()
    early = s.msg("search", event_id="e1", user_id="u1", ts=1.0, query="private thing")
    delete = s.msg("delete", user_id="u1")
    late = s.msg("search", event_id="e2", user_id="u1", ts=2.0, query="fresh start")
    res = run(proc, table, [delete])
    assert res.deleted == {"u1"}
    res = run(proc, table, [early, late])  # the earlier event arrives after the deletion
    assert res.counts["erased"] == 1 and res.counts["applied"] == 1
    st = table.state("u1")
    assert st.counts["search"] == 1 and [t for t, _ in st.top_terms()] == ["fresh", "start"]
    invariant(proc)


def test_a_deletion_with_a_forged_future_timestamp_does_not_block_the_users_new_events():
    proc, _, table, s = setup()
    s.clock = time.time() + 10 * 365 * 86400.0  # the producer set the Kafka timestamp
    run(proc, table, [s.msg("delete", user_id="u1")])
    s.clock = time.time() + 1.0  # published after the deletion was applied
    res = run(proc, table, [s.msg("search", event_id="e1", user_id="u1", ts=2.0, query="new")])
    assert res.counts["erased"] == 0 and res.counts["applied"] == 1
    assert UserRecord.from_bytes(table.rows["u1"], PARAMS).erased_at <= time.time()
    invariant(proc)


@pytest.mark.parametrize("cut", [1, 3, 7])
def test_batch_boundaries_do_not_change_the_result(cut):
    def stream():
        s = Stream()
        out = [s.msg("item", item_id="m1", title="red apple pie")]
        for i in range(8):
            out.append(s.msg("click", event_id=f"c{i}", user_id=f"u{i % 3}", item_id="m1", ts=i))
            out.append(s.msg("search", event_id=f"s{i}", user_id=f"u{i % 2}", ts=i, query=f"w{i}"))
        return out

    whole_proc, _, whole, _ = setup()
    run(whole_proc, whole, stream())
    proc, _, table, _ = setup()
    msgs = stream()
    for a in range(0, len(msgs), cut):
        run(proc, table, msgs[a : a + cut])
    for user in whole.rows:
        a, b = whole.state(user), table.state(user)
        assert cos(a.fused(), b.fused()) > 0.99999
        assert a.counts == b.counts and a.offsets == b.offsets


def test_a_text_seen_in_an_earlier_batch_is_not_encoded_again():
    proc, _, table, s = setup()
    again = s.msg("search", event_id="e2", user_id="u2", ts=2.0, query="jazz club")
    run(proc, table, [s.msg("search", event_id="e1", user_id="u1", ts=1.0, query="jazz club")])
    res = run(proc, table, [again])
    assert proc.encoder.calls == [("query", 1)]
    assert +res.texts == {"cached": 1} and +proc.text_totals == {"encoded": 1, "cached": 1}
    # the same vectors as a worker that encoded it afresh
    fresh, _, other, s2 = setup(text_cache_size=0)
    run(fresh, other, [s2.msg("search", event_id="e2", user_id="u2", ts=2.0, query="jazz club")])
    assert cos(table.state("u2").fused(), other.state("u2").fused()) > 0.99999
    assert fresh.encoder.calls == [("query", 1)]


def test_a_deletion_empties_the_text_cache():
    proc, _, table, s = setup()
    run(proc, table, [s.msg("search", event_id="e1", user_id="u1", ts=1.0, query="secret hobby")])
    assert len(proc.texts) == 1
    run(proc, table, [s.msg("delete", user_id="u1")])
    assert len(proc.texts) == 0
    run(proc, table, [s.msg("search", event_id="e2", user_id="u2", ts=2.0, query="secret hobby")])
    assert proc.encoder.calls == [("query", 1), ("query", 1)]  # encoded again


def test_texts_of_events_not_applied_are_not_cached():
    proc, _, table, s = setup()
    delete = s.msg("delete", user_id="u1")
    early = Message(
        "events.search",
        0,
        99,
        b"u1",
        json.dumps({"event_id": "e0", "user_id": "u1", "ts": 1.0, "query": "old secret"}).encode(),
        delete.timestamp - 10,  # published before the deletion, delivered after it
    )
    run(proc, table, [delete])
    res = run(proc, table, [early])
    assert res.counts["erased"] == 1 and len(proc.texts) == 0
    dup = s.msg("search", event_id="d1", user_id="u2", ts=1.0, query="twice")
    run(proc, table, [dup])
    proc.forget_texts()  # partitions moved
    res = run(proc, table, [dup])  # re-delivered: a duplicate, not applied, not cached
    assert res.counts["duplicates"] == 1 and len(proc.texts) == 0
    invariant(proc)
