"""Replay a JSON Lines file (optionally .gz) into Kafka, line by line (DESIGN.md section 2).

Each line goes to the topic of its `type`, keyed by user_id (items: item_id), its value
the line's object without `type`. Lines that can be routed are published as they are,
valid or not: validation and dead-lettering are the worker's job. Lines that cannot be
routed (not a JSON object, unknown type, no key) are counted and skipped.

The producer batches (linger 5 ms) and keeps a bounded window of unacknowledged sends;
acks=all. Idempotence stays off: Tansu 0.6 answers InitProducerId with UnknownError.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from streams.events import TOPIC_TYPES

DEFAULT_BROKER = "127.0.0.1:9092"
TYPE_TOPICS = {kind: topic for topic, kind in TOPIC_TYPES.items()}
KEY_FIELDS = {"item": "item_id"}  # every other type is keyed by user_id
TOPIC_ORDER = ("items", "events.click", "events.search", "events.comment", "users.delete")
MAX_REASONS = 20
WINDOW = 4096  # sends in flight before we wait for the oldest acknowledgement
CONNECT_TIMEOUT_S = 10.0
PACE_SLACK_S = 0.001  # sleep only when ahead of the schedule by more than this


class PublishError(RuntimeError):
    """The broker is unreachable, or it did not acknowledge a message."""


class UnroutableLine(ValueError):
    """A line with no topic or no key; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def route_line(raw: bytes | str) -> tuple[str, bytes, bytes]:
    """(topic, key, value) for one replay line; raise UnroutableLine if there is none.

    >>> topic, key, value = route_line('{"type": "search", "user_id": 7, "query": "科幻"}')
    >>> topic, key, value.decode()
    ('events.search', b'7', '{"user_id":7,"query":"科幻"}')
    >>> route_line('{"type": "item", "item_id": "m1", "title": "t"}')[:2]
    ('items', b'm1')
    >>> route_line('{"type": "like", "user_id": "u1"}')
    Traceback (most recent call last):
    ...
    streams.publish.UnroutableLine: unknown type 'like'
    """
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError:
        raise UnroutableLine("not valid UTF-8") from None
    except json.JSONDecodeError as err:
        raise UnroutableLine(f"invalid JSON: {err.msg} at position {err.pos}") from None
    if not isinstance(obj, dict):
        raise UnroutableLine(f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.pop("type", None)
    if kind not in TYPE_TOPICS:
        raise UnroutableLine(f"unknown type {kind!r}" if kind is not None else "no type")
    key_field = KEY_FIELDS.get(kind, "user_id")
    key = obj.get(key_field)
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    if not isinstance(key, str) or not key:
        raise UnroutableLine(f"no {key_field} to key the {kind} by")
    try:
        key_bytes = key.encode("utf-8")
    except UnicodeEncodeError:
        raise UnroutableLine(f"{key_field} is not encodable as UTF-8") from None
    try:
        value = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800"): keep it escaped, as it came
        value = json.dumps(obj, separators=(",", ":")).encode("ascii")
    return TYPE_TOPICS[kind], key_bytes, value


@dataclass
class PublishReport:
    """What a replay did: acknowledged messages per topic, skipped lines, time taken."""

    published: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    reasons: list[tuple[int, str]] = field(default_factory=list)  # the first MAX_REASONS
    seconds: float = 0.0
    created_topics: list[str] = field(default_factory=list)  # missing before we published

    @property
    def total(self) -> int:
        return sum(self.published.values())

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def skip(self, line_no: int, reason: str) -> None:
        self.skipped += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append((line_no, reason))

    def summary(self) -> str:
        """
        >>> r = PublishReport(Counter({"events.click": 2600, "items": 420}), seconds=1.2)
        >>> r.skip(14, "invalid JSON: Expecting value at position 0")
        >>> for part in r.summary().split("; "):
        ...     print(part)
        published 3,020 messages (items 420, events.click 2,600) in 1.20 s (2,517/s)
        skipped 1 line: line 14: invalid JSON: Expecting value at position 0
        """
        order = [t for t in TOPIC_ORDER if self.published[t]]
        order += sorted(t for t in self.published if t not in TOPIC_ORDER and self.published[t])
        per = ", ".join(f"{t} {self.published[t]:,}" for t in order)
        text = f"published {self.total:,} messages" + (f" ({per})" if per else "")
        secs = f"{self.seconds:.2f}" if self.seconds < 10 else f"{self.seconds:,.0f}"
        text += f" in {secs} s ({self.rate:,.0f}/s)"
        if self.skipped:
            lines = "line" if self.skipped == 1 else "lines"
            shown = "; ".join(f"line {n}: {why}" for n, why in self.reasons)
            more = self.skipped - len(self.reasons)
            text += f"; skipped {self.skipped:,} {lines}: {shown}" + (
                f"; and {more:,} more" if more else ""
            )
        if self.created_topics:
            text += (
                f". Note: topics {', '.join(self.created_topics)} did not exist; the broker "
                "created them with its default partition count"
            )
        return text


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else path.open("rb")


class _Pacer:
    """Token-bucket pacing to `rate` messages/s against time.monotonic, accurate over the
    run: message i is due at start + i / rate; we sleep only when ahead of that."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.count = 0

    async def wait(self) -> None:
        if self.rate is not None:
            ahead = self.start + self.count / self.rate - time.monotonic()
            if ahead > PACE_SLACK_S:
                await asyncio.sleep(ahead)
        self.count += 1


def _progress(enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        desc="replay",
        unit=" msg",
        file=sys.stderr,
        disable=not (enabled and sys.stderr.isatty()),
        mininterval=0.25,
    )


async def _start(bootstrap: str, timeout: float) -> Any:
    from aiokafka import AIOKafkaProducer
    from aiokafka.errors import KafkaError

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="interest-stream-replay",
        acks="all",
        linger_ms=5,
        max_batch_size=256 * 1024,
        enable_idempotence=False,  # Tansu 0.6: InitProducerId -> UnknownError
    )
    try:
        await asyncio.wait_for(producer.start(), timeout)
    except (KafkaError, OSError, TimeoutError) as err:
        await producer.stop()
        why = f"no answer within {timeout:g} s" if isinstance(err, TimeoutError) else str(err)
        raise PublishError(f"cannot reach the Kafka broker at {bootstrap}: {why}") from None
    return producer


async def publish(
    path: str | Path,
    bootstrap: str,
    *,
    rate: float | None = None,
    progress: bool = True,
    limit: int | None = None,
    connect_timeout: float = CONNECT_TIMEOUT_S,
) -> PublishReport:
    """Publish every routable line of `path` (at most `limit`), paced to `rate` messages/s
    if given. Returns once the broker has acknowledged all of them; raises PublishError if
    it cannot be reached or a message is not acknowledged."""
    from aiokafka.errors import KafkaError, MessageSizeTooLargeError

    if rate is not None and rate <= 0:
        raise ValueError("rate must be > 0 messages/s")
    path = Path(path)
    report = PublishReport()
    producer = await _start(bootstrap, connect_timeout)
    inflight: deque[tuple[asyncio.Future[Any], str, int]] = deque()

    async def settle_oldest() -> None:
        fut, topic, line_no = inflight.popleft()
        try:
            await fut
        except KafkaError as err:
            raise PublishError(f"line {line_no}: {topic} did not acknowledge: {err}") from None
        report.published[topic] += 1

    bar = _progress(progress)
    try:
        existing = set((await producer.client.fetch_all_metadata()).topics())
        pacer = _Pacer(rate)
        with _open(path) as lines:
            for line_no, raw in enumerate(lines, 1):
                if limit is not None and pacer.count >= limit:
                    break
                if not raw.strip():
                    continue
                try:
                    topic, key, value = route_line(raw)
                except UnroutableLine as err:
                    report.skip(line_no, err.reason)
                    continue
                await pacer.wait()
                try:
                    fut = await producer.send(topic, value, key=key)
                except MessageSizeTooLargeError:
                    report.skip(line_no, f"{len(value):,} bytes: more than the producer sends")
                    continue
                inflight.append((fut, topic, line_no))
                if len(inflight) >= WINDOW:
                    await settle_oldest()
                bar.update(1)
        await producer.flush()
        while inflight:
            await settle_oldest()
        report.seconds = time.monotonic() - pacer.start
    finally:
        bar.close()
        for fut, _, _ in inflight:
            fut.cancel()
        await producer.stop()
    report.created_topics = sorted(t for t in report.published if t not in existing)
    return report


async def send_records(
    bootstrap: str, records: list[tuple[str, bytes | None, bytes | None]], **options: Any
) -> list[Any]:
    """Publish (topic, key, value) records as they are and wait until all are acknowledged
    (tests, benchmarks and tools that need exact bytes, bad ones included). Returns each
    record's metadata (partition, offset); `options` go to AIOKafkaProducer (say
    max_request_size, for messages over its 1 MiB default)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **options)
    await producer.start()
    try:
        futures = [await producer.send(t, v, key=k) for t, k, v in records]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def read_records(
    bootstrap: str, topic: str, expect: int, timeout: float = 20.0, **options: Any
) -> list[Any]:
    """Read every partition of `topic` from its start until `expect` records arrived or
    `timeout` passed; returns aiokafka ConsumerRecords (tests, benchmarks and tools).
    Tansu's end offsets are not the log end, so "read to the end" is not an option."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, **options)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or [0]]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(out) < expect and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                out += msgs
        return out
    finally:
        await consumer.stop()


def json_records(records: list[tuple[str, str, dict]]) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, object) -> (topic, key bytes, JSON bytes)."""
    return [(t, k.encode(), json.dumps(v).encode()) for t, k, v in records]


def add_replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="JSON Lines replay file (.gz ok)")
    parser.add_argument(
        "--rate", type=float, default=None, metavar="N", help="messages per second (default: max)"
    )
    parser.add_argument(
        "--broker", default=DEFAULT_BROKER, metavar="HOST:PORT", help=f"default {DEFAULT_BROKER}"
    )
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="stop after N")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=cmd_replay)


def cmd_replay(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"replay: no such file: {path}", file=sys.stderr)
        return 2
    if args.rate is not None and args.rate <= 0:
        print("replay: --rate must be > 0", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(
            publish(
                path,
                args.broker,
                rate=args.rate,
                progress=not getattr(args, "no_progress", False),
                limit=getattr(args, "limit", None),
            )
        )
    except PublishError as err:
        print(f"replay: {err}", file=sys.stderr)
        return 1
    except (OSError, EOFError) as err:  # unreadable file, broken gzip
        print(f"replay: cannot read {path}: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    return 0
