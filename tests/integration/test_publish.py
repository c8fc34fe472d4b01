"""The replay publisher against a real Tansu broker: routing, keys, values, pacing, errors."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import socket
import time
from collections import Counter
from pathlib import Path

import pytest

from streams.embedded import INPUT_TOPICS, EmbeddedBroker, ensure_topics, free_port
from streams.movielens import write_sample
from streams.publish import (
    PublishError,
    PublishReport,
    UnroutableLine,
    add_replay_arguments,
    publish,
    route_line,
)

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample_events.jsonl"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        ensure_topics(b.bootstrap, partitions=2)
        yield b


def replay_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_replay_arguments(parser)
    return parser.parse_args(list(argv))


async def drain(bootstrap: str, expected: int, timeout: float = 10.0) -> list:
    """Every message of the input topics, read from the start with a group-less consumer.

    Tansu 0.6's ListOffsets(latest) answers the last batch's base offset + 1, not the log
    end, so end_offsets() cannot say when to stop; the high watermark of fetch responses is
    right. We read until `expected` arrived, then until every partition is at its watermark.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        await consumer.topics()  # fetches the metadata partitions_for_topic reads
        tps = [
            TopicPartition(t, p)
            for t in INPUT_TOPICS
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got: list = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                got.extend(msgs)
            if len(got) >= expected and not batch:
                break
        for tp in tps:
            assert await consumer.position(tp) == (consumer.highwater(tp) or 0), tp
        return got
    finally:
        await consumer.stop()


def fresh_broker(tmp_path: Path) -> EmbeddedBroker:
    b = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    ensure_topics(b.bootstrap, partitions=2)
    return b


def test_sample_file_round_trips_with_topics_keys_and_values(tmp_path: Path) -> None:
    with fresh_broker(tmp_path) as b:
        report = asyncio.run(publish(SAMPLE, b.bootstrap, progress=False))
        msgs = asyncio.run(drain(b.bootstrap, report.total))
    # line 13 is a click with a bad ts but a user_id: routable, published (the worker
    # dead-letters it); line 14 is not JSON: skipped. Line 10 repeats line 9 and is sent too.
    assert report.skipped == 1 and report.reasons[0][0] == 14
    assert report.reasons[0][1].startswith("invalid JSON")
    assert dict(report.published) == {
        "items": 6,
        "events.click": 8,
        "events.search": 2,
        "events.comment": 3,
    }
    assert len(msgs) == report.total == 19
    expected = []
    for raw in SAMPLE.read_bytes().splitlines():
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        kind = obj.pop("type")
        key = obj["item_id"] if kind == "item" else obj["user_id"]
        topic = {"item": "items"}.get(kind, f"events.{kind}")
        expected.append((topic, key.encode(), obj))
    got = [(m.topic, m.key, json.loads(m.value)) for m in msgs]
    assert sorted(got, key=repr) == sorted(expected, key=repr)
    assert all("type" not in json.loads(m.value) for m in msgs)
    bad = next(json.loads(m.value) for m in msgs if m.value and b'"bad1"' in m.value)
    assert bad["ts"] == "soon"  # published as is
    # values are compact UTF-8, not \u escapes
    assert any("星际穿越".encode() in m.value for m in msgs)
    # one user's messages of one topic stay on one partition, in file order
    by_key: dict[tuple[str, bytes], set[int]] = {}
    for m in msgs:
        by_key.setdefault((m.topic, m.key), set()).add(m.partition)
    assert all(len(parts) == 1 for parts in by_key.values())
    u1_clicks = [
        json.loads(m.value)["event_id"]
        for m in msgs
        if m.topic == "events.click" and m.key == b"u1"
    ]
    assert u1_clicks == ["e1", "e3", "e3", "e5", "bad1", "e6"]


def test_generated_sample_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "demo.jsonl.gz"
    counts = write_sample(path, limit_users=3)
    with fresh_broker(tmp_path) as b:
        report = asyncio.run(publish(path, b.bootstrap, progress=False))
        msgs = asyncio.run(drain(b.bootstrap, report.total))
    topic_of = {"item": "items", "delete": "users.delete"}
    assert report.skipped == 0
    assert dict(report.published) == {topic_of.get(t, f"events.{t}"): n for t, n in counts.items()}
    assert Counter(m.topic for m in msgs) == report.published
    got = Counter((m.topic, m.key, m.value) for m in msgs)
    want = Counter(route_line(line) for line in gzip.decompress(path.read_bytes()).splitlines())
    assert got == want
    (delete,) = [m for m in msgs if m.topic == "users.delete"]
    assert (delete.key, json.loads(delete.value)["user_id"]) == (b"u999", "u999")


def test_unroutable_lines_are_counted_with_line_numbers(
    tmp_path: Path, broker: EmbeddedBroker
) -> None:
    lines = [
        '{"type": "click", "event_id": "x1", "user_id": "u1", "item_id": "1", "ts": 1}',
        "[1, 2]",
        '{"type": "like", "user_id": "u1"}',
        '{"event_id": "x2", "user_id": "u1"}',
        "",
        '{"type": "search", "event_id": "x3", "query": "no user"}',
        '{"type": "item", "item_id": "", "title": "empty key"}',
        '{"type": "delete", "user_id": 42}',
        json.dumps({"type": "search", "user_id": "u1", "query": "x" * 2_000_000}),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = asyncio.run(publish(path, broker.bootstrap, progress=False))
    assert dict(report.published) == {"events.click": 1, "users.delete": 1}
    assert report.reasons == [
        (2, "expected a JSON object, got list"),
        (3, "unknown type 'like'"),
        (4, "no type"),
        (6, "no user_id to key the search by"),
        (7, "no item_id to key the item by"),
        (9, "2,000,027 bytes: more than the producer sends"),
    ]
    assert "skipped 6 lines: line 2: expected a JSON object" in report.summary()
    assert route_line(lines[-2])[1:] == (b"42", b'{"user_id":42}')


def test_rate_paces_the_run(tmp_path: Path, broker: EmbeddedBroker) -> None:
    path = tmp_path / "paced.jsonl"
    with path.open("w") as f:
        for i in range(300):
            f.write(json.dumps({"type": "search", "event_id": f"r{i}", "user_id": f"p{i % 9}"}))
            f.write("\n")
    t0 = time.monotonic()
    report = asyncio.run(publish(path, broker.bootstrap, rate=400, progress=False, limit=200))
    took = time.monotonic() - t0
    assert report.total == 200
    assert 0.35 <= report.seconds <= 1.5 and took < 3, (report.seconds, took)
    assert 250 <= report.rate <= 600


def test_cli_summary_and_unreachable_broker(
    tmp_path: Path, broker: EmbeddedBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    args = replay_args(str(SAMPLE), "--broker", broker.bootstrap, "--no-progress")
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("published 19 messages (items 6, events.click 8,")
    assert "skipped 1 line: line 14: invalid JSON" in out

    t0 = time.monotonic()
    args = replay_args(str(SAMPLE), "--broker", f"127.0.0.1:{free_port()}")
    assert args.func(args) == 1
    assert time.monotonic() - t0 < 15
    err = capsys.readouterr().err
    assert "cannot reach the Kafka broker at 127.0.0.1:" in err and "Traceback" not in err

    args = replay_args(str(tmp_path / "missing.jsonl"))
    assert args.func(args) == 2


def test_a_silent_broker_times_out_at_startup() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        bootstrap = f"127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        with pytest.raises(PublishError, match="no answer within 1 s"):
            asyncio.run(publish(SAMPLE, bootstrap, progress=False, connect_timeout=1))
        assert time.monotonic() - t0 < 5


def test_route_line_edge_cases() -> None:
    # a lone surrogate escape stays escaped (the worker decides), a key with one cannot be sent
    topic, key, value = route_line(r'{"type": "search", "user_id": "u", "query": "a\ud800"}')
    assert (topic, key) == ("events.search", b"u") and json.loads(value)["query"] == "a\ud800"
    with pytest.raises(UnroutableLine, match="not encodable"):
        route_line(r'{"type": "delete", "user_id": "\ud800"}')
    with pytest.raises(UnroutableLine, match="not valid UTF-8"):
        route_line(b'{"type": "delete", "user_id": "\xff"}')
    with pytest.raises(UnroutableLine, match="no user_id"):
        route_line('{"type": "delete", "user_id": true}')


def test_broken_gzip_is_a_clean_error(
    tmp_path: Path, broker: EmbeddedBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "broken.jsonl.gz"
    path.write_bytes(gzip.compress(SAMPLE.read_bytes())[:200])
    args = replay_args(str(path), "--broker", broker.bootstrap, "--no-progress")
    assert args.func(args) == 1
    assert "cannot read" in capsys.readouterr().err


def test_report_summary_keeps_the_first_reasons() -> None:
    r = PublishReport()
    for n in range(1, 31):
        r.skip(n, "invalid JSON")
    assert r.skipped == 30 and len(r.reasons) == 20
    assert r.summary().endswith("line 20: invalid JSON; and 10 more")
