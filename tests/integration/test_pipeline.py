"""End to end on real parts: Tansu broker, `interest-stream up` worker, qdrant-client local mode.

One worker (RocksDB tables, 2 partitions per topic) serves the whole module; each test
uses its own users. Results are read the way users read them: the worker's HTTP API, the
DLQ topic, and Qdrant's directory after the worker stopped.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from streams.embedded import EmbeddedBroker, ensure_topics
from streams.publish import read_records as consume_all
from streams.publish import send_records as produce
from streams.supervisor import WorkerProcess

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).parents[1] / "data" / "sample_events.jsonl"
CHANGELOG = "interest-stream-users-changelog"


def replay_lines(bootstrap: str, lines: list[dict]) -> int:
    from streams.events import TOPIC_TYPES

    topic_of = {v: k for k, v in TOPIC_TYPES.items()}
    records = []
    for d in lines:
        d = dict(d)
        kind = d.pop("type")
        key = d["item_id"] if kind == "item" else d["user_id"]
        records.append((topic_of[kind], str(key).encode(), json.dumps(d).encode()))
    asyncio.run(produce(bootstrap, records))
    return len(records)


def sample_lines() -> list[dict]:
    out = []
    for line in SAMPLE.read_text().splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if isinstance(d, dict) and d.get("type") in {"item", "click", "search", "comment"}:
            out.append(d)
    return out


def cos(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, e5_exported):
    tmp = tmp_path_factory.mktemp("pipeline")
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, 2)
        worker = WorkerProcess(
            broker.bootstrap, tmp / "data", env={"INTEREST_COMMIT_INTERVAL_S": "3600"}
        ).start()
        try:
            yield broker, worker
        finally:
            worker.stop()


def test_published_events_become_vectors_equal_to_the_offline_profile(stack):
    from encoders import Encoder
    from streams.profile import build_profile
    from streams.state import CHANNELS

    broker, worker = stack
    lines = sample_lines()
    n = replay_lines(broker.bootstrap, lines)
    h = worker.wait_idle(consumed=n)
    # line 13 (ts "soon") is routable but invalid; line 14 is not JSON and never published
    assert h["totals"]["dead_lettered"] == 1, h
    assert h["totals"]["duplicates"] == 1, h  # line 10 repeats event e3
    enc = Encoder("e5-small", device="cpu")
    users = sorted({d["user_id"] for d in lines if "user_id" in d})
    assert len(users) >= 2
    for user in users:
        status, got = worker.get(f"/users/{user}/vectors")
        assert status == 200, got
        prof = build_profile(SAMPLE, user, enc)
        assert got["counts"] == prof.state.counts
        for channel in (*CHANNELS, "fused"):
            want = prof.state.fused() if channel == "fused" else prof.state.vector(channel)
            if want is None:
                assert got["vectors"][channel] is None, (user, channel)
            else:
                assert cos(got["vectors"][channel], want) >= 0.999, (user, channel)


def test_republished_events_change_nothing(stack):
    broker, worker = stack
    lines = [
        {"type": "item", "item_id": "d1", "title": "Deep sea documentary about whales"},
        *[
            {
                "type": "click",
                "event_id": f"dup-{i}",
                "user_id": "dup-user",
                "item_id": "d1",
                "ts": 1.7e9 + i,
            }
            for i in range(5)
        ],
        {
            "type": "search",
            "event_id": "dup-s",
            "user_id": "dup-user",
            "ts": 1.7e9,
            "query": "鲸鱼",
        },
    ]
    before = worker.health()["totals"].get("consumed", 0)
    n = replay_lines(broker.bootstrap, lines)
    worker.wait_idle(consumed=before + n)
    first = worker.get("/users/dup-user/vectors")[1]
    n2 = replay_lines(broker.bootstrap, lines[1:])  # the same events again, new offsets
    h = worker.wait_idle(consumed=before + n + n2)
    again = worker.get("/users/dup-user/vectors")[1]
    assert (
        again["counts"]
        == first["counts"]
        == {
            "click": 5,
            "search": 1,
            "comment": 0,
            "negative": 0,
        }
    )
    assert again["vectors"] == first["vectors"]
    assert h["totals"]["duplicates"] >= n2


def test_a_malformed_mix_is_dead_lettered_with_reasons_and_counts_add_up(stack):
    broker, worker = stack
    good = {
        "event_id": "mx1",
        "user_id": "mix-user",
        "ts": 1.7e9,
        "query": "jazz records",
    }
    bad: list[tuple[str, bytes | None, bytes | None]] = [
        ("events.click", b"mix-user", b"{not json"),
        ("events.click", b"mix-user", b"\xff\xfe\xfd"),
        ("events.search", b"mix-user", json.dumps({**good, "ts": "yesterday"}).encode()),
        ("events.search", b"mix-user", json.dumps({**good, "ts": 4e12}).encode()),
        ("events.comment", b"mix-user", json.dumps({**good, "text": "x" * 30_000}).encode()),
        ("events.search", b"other-key", json.dumps(good).encode()),
        ("events.search", None, json.dumps(good).encode()),
        ("items", b"i1", json.dumps({"item_id": "i1"}).encode()),
    ]
    records = [("events.search", b"mix-user", json.dumps(good).encode()), *bad]
    before = worker.health()["totals"]
    asyncio.run(produce(broker.bootstrap, records))
    h = worker.wait_idle(consumed=before.get("consumed", 0) + len(records))
    t = h["totals"]
    assert t["dead_lettered"] - before.get("dead_lettered", 0) == len(bad)
    assert t["applied"] - before.get("applied", 0) == 1
    kinds = ("applied", "duplicates", "erased", "dead_lettered", "parked")
    handled = sum(t.get(k, 0) for k in kinds)
    assert t["consumed"] == handled + t.get("items", 0) + t.get("deletes", 0)
    # the module's other dead letter is sample line 13, from the first test
    got = asyncio.run(consume_all(broker.bootstrap, "events.dlq", expect=len(bad) + 1))
    dlq = [json.loads(m.value) for m in got]
    assert len(dlq) == len(bad) + 1
    reasons = " | ".join(d["reason"] for d in dlq)
    for expected in ("invalid JSON", "UTF-8", "ts", "future", "longer than", "expected its user"):
        assert expected in reasons, (expected, reasons)
    assert all(d["error"] and d["value_b64"] is not None and d["offset"] >= 0 for d in dlq)


def test_deleting_a_user_removes_state_and_points(stack):
    broker, worker = stack
    user = "gone-user"
    before = worker.health()["totals"]["consumed"]
    n = replay_lines(
        broker.bootstrap,
        [
            {"type": "search", "event_id": "g1", "user_id": user, "ts": 1.7e9, "query": "secret"},
            {"type": "search", "event_id": "g2", "user_id": "kept-user", "ts": 1.7e9, "query": "x"},
        ],
    )
    worker.wait_idle(consumed=before + n)
    assert worker.get(f"/users/{user}/vectors")[0] == 200
    delete = [("users.delete", user.encode(), json.dumps({"user_id": user}).encode())]
    asyncio.run(produce(broker.bootstrap, delete))
    worker.wait_idle(consumed=before + n + 1)
    assert worker.get(f"/users/{user}/vectors")[0] == 404
    assert worker.get("/users/kept-user/vectors")[0] == 200
    assert_changelog_erased(broker.bootstrap, user, b"secret")


def test_a_repeated_search_comes_from_the_text_cache_until_a_deletion(stack):
    broker, worker = stack
    query = "ramen shops near the harbour"

    def step(lines: list[dict]) -> dict[str, int]:
        """Publish, wait, and return how many distinct texts were encoded / cached."""
        before = worker.health()
        n = replay_lines(broker.bootstrap, lines)
        after = worker.wait_idle(consumed=before["totals"]["consumed"] + n)
        return {
            k: after["texts"].get(k, 0) - before["texts"].get(k, 0) for k in ("encoded", "cached")
        }

    def search(user: str) -> dict:
        return {
            "type": "search",
            "event_id": f"{user}-1",
            "user_id": user,
            "ts": 1.7e9,
            "query": query,
        }

    assert step([search("cache-a")]) == {"encoded": 1, "cached": 0}
    assert step([search("cache-b")]) == {"encoded": 0, "cached": 1}
    a, b = (worker.get(f"/users/{u}/vectors")[1]["vectors"] for u in ("cache-a", "cache-b"))
    for channel in ("word", "sentence", "document", "fused"):
        assert cos(a[channel], b[channel]) >= 0.9999, channel
    # a deletion (of anyone) empties the cache: the text is encoded again
    before = worker.health()["totals"]["consumed"]
    asyncio.run(
        produce(broker.bootstrap, [("users.delete", b"cache-a", b'{"user_id": "cache-a"}')])
    )
    worker.wait_idle(consumed=before + 1)
    assert step([search("cache-c")]) == {"encoded": 1, "cached": 0}


def assert_changelog_erased(bootstrap: str, user: str, text: bytes) -> None:
    """The user's latest changelog record (what a restarted worker or a partition's new
    owner restores the table from) is a tombstone or an erased record: input offsets and
    the deletion time, no vectors, terms, items, event ids or text. (Their earlier records
    stay in the log until Kafka compacts the changelog.)"""
    from streams.record import UserRecord
    from streams.state import StateParams

    log = asyncio.run(consume_all(bootstrap, CHANGELOG, expect=10**9, timeout=3))
    latest = max((m for m in log if m.key == user.encode()), key=lambda m: m.offset)
    if latest.value is None:
        return
    record = UserRecord.from_bytes(latest.value, StateParams())
    assert record.erased and record.erased_at is not None
    assert not record.recent_ids and not record.parked
    st = record.state
    assert st.last_ts is None and not st.top_terms() and not st.seen_items()
    assert all(v is None for v in st.named_vectors().values())
    assert text not in latest.value


def test_table_writes_land_in_the_changelog_partition_of_the_users_partition(stack):
    broker, _ = stack
    users = {"u1", "u2", "dup-user", "mix-user", "kept-user", "gone-user"}
    source: dict[str, set[int]] = {}
    for topic in ("events.click", "events.search", "users.delete"):
        for m in asyncio.run(consume_all(broker.bootstrap, topic, expect=10**9, timeout=3)):
            if m.key and m.key.decode() in users:
                source.setdefault(m.key.decode(), set()).add(m.partition)
    changelog = asyncio.run(consume_all(broker.bootstrap, CHANGELOG, expect=10**9, timeout=3))
    written: dict[str, set[int]] = {}
    for m in changelog:
        if m.key.decode() in users:
            written.setdefault(m.key.decode(), set()).add(m.partition)
    assert set(written) == users
    for user in users:
        assert len(source[user]) == 1, (user, source[user])  # keyed: one partition a user
        assert written[user] == source[user], user


def test_deleting_over_http_is_disabled_without_a_configured_token(stack):
    import urllib.error
    import urllib.request

    _, worker = stack  # started without INTEREST_API_TOKEN
    req = urllib.request.Request(f"{worker.url}/users/kept-user", method="DELETE")
    req.add_header("Authorization", "Bearer anything")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 403 and "INTEREST_API_TOKEN" in json.loads(err.value.read())["error"]
    assert worker.get("/users/kept-user/vectors")[0] == 200


def test_a_crash_and_restart_that_reads_everything_again_changes_nothing(stack):
    """The module's worker never commits offsets (INTEREST_COMMIT_INTERVAL_S=3600), so
    after kill -9 the restarted worker reads every message again."""
    from streams.embedded import INPUT_TOPICS

    broker, worker = stack
    users = ["u1", "u2", "dup-user", "mix-user", "kept-user"]
    before = {u: worker.get(f"/users/{u}/vectors")[1] for u in users}
    dead_before = worker.health()["totals"]["dead_lettered"]
    worker.kill()
    worker.start()
    total = sum(
        len(asyncio.run(consume_all(broker.bootstrap, t, expect=10**9, timeout=2)))
        for t in INPUT_TOPICS
    )
    h = worker.wait_idle(consumed=total)
    t = h["totals"]
    # valid events are all recognised; invalid ones are dead-lettered again (the DLQ is
    # at-least-once: (topic, partition, offset) identifies a dead letter)
    assert t.get("applied", 0) == 0 and t["dead_lettered"] == dead_before, t
    for u in users:
        after = worker.get(f"/users/{u}/vectors")[1]
        assert after["vectors"] == before[u]["vectors"] and after["counts"] == before[u]["counts"]
    assert worker.get("/users/gone-user/vectors")[0] == 404


def test_after_a_clean_stop_qdrant_holds_every_user_but_the_deleted_one(stack):
    from streams.sink import QdrantSink

    _, worker = stack
    assert worker.stop() == 0, worker.tail()
    with QdrantSink(384, path=worker.data_dir / "qdrant") as sink:
        users = sink.get_users(["u1", "u2", "dup-user", "kept-user", "gone-user"])
        items = sink.get_items(["m1", "m2", "d1"])
    assert set(users) == {"u1", "u2", "dup-user", "kept-user"}
    vectors, payload = users["u1"]
    assert {"word", "sentence", "document", "fused"} <= set(vectors)
    assert payload["user_id"] == "u1" and payload["top_terms"]
    assert set(items) == {"m1", "m2", "d1"} and items["m1"]["title"]
