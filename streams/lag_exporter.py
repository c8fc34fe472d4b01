"""Consumer-group lag measured from outside the workers, served on its own `/metrics`.

Like kafka-lag-exporter, per topic-partition of a consumer group:

- lag in messages = log end offset - committed offset;
- lag in seconds = age of the oldest unprocessed message, the one at the committed offset
  (0 when the group is caught up).

The workers report their own lag too (`interest_consumer_lag_*`), but a worker that is
stopped, stalled or crashed reports nothing; this exporter keeps measuring, so lag alerts
fire exactly when no worker consumes. A partition the group never committed counts from
the log start, where the workers begin (`auto.offset.reset=earliest`).

How it reads the broker (aiokafka), and why, tried on Tansu 0.6 and valid on Kafka:

- topics and their partitions come from a metadata request for *all* topics: asking for
  a topic that does not exist makes Kafka (and Tansu) auto-create it;
- committed offsets: OffsetFetch for explicit partitions (Tansu drops the connection when
  asked for all of a group's partitions; -1 means none committed);
- log end offsets: the high watermark of a Fetch at the committed offset, whose first
  record also gives the oldest unprocessed message's timestamp. Tansu's ListOffsets(latest)
  answers the base offset of the last record batch + 1, not the log end.

Pure computation (`partition_lag`) is apart from the I/O (`OffsetReader`) and from the
exposition (`LagCollector`), so the arithmetic is unit-tested without a broker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.embedded import INPUT_TOPICS

log = logging.getLogger("streams.lag_exporter")

DEFAULT_PORT = 6067  # next to the worker's 6066
DEFAULT_INTERVAL_S = 5.0


@dataclass(frozen=True)
class PartitionOffsets:
    """What the broker said about one partition of the group's topics.

    `committed` is the next offset the group will read (None: never committed); `start`
    the log start offset; `oldest_ts` the publish time (Unix seconds) of the first message
    at or after the committed offset, None if there is none or it could not be read.
    """

    topic: str
    partition: int
    end: int
    committed: int | None
    start: int = 0
    oldest_ts: float | None = None

    @property
    def position(self) -> int:
        """Where the group reads next: its committed offset, else the log start."""
        return self.start if self.committed is None else self.committed


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    messages: int
    seconds: float  # NaN: behind, but the oldest unprocessed message could not be read
    end: int
    committed: int | None


def partition_lag(o: PartitionOffsets, now: float) -> PartitionLag:
    """Messages and seconds the group is behind on one partition at time `now`.

    >>> lag = partition_lag(PartitionOffsets("events.click", 0, end=120, committed=100,
    ...                                      oldest_ts=1000.0), now=1030.0)
    >>> lag.messages, lag.seconds
    (20, 30.0)

    Caught up, the age is 0 whatever the last message's time; a partition never committed
    counts from the log start:

    >>> partition_lag(PartitionOffsets("items", 1, end=7, committed=7), now=5.0).seconds
    0.0
    >>> partition_lag(PartitionOffsets("items", 2, end=7, committed=None, start=2), 0).messages
    5

    A committed offset past the log end (a truncated log) is no lag, and a clock behind the
    producer's gives no negative age:

    >>> partition_lag(PartitionOffsets("items", 3, end=5, committed=9), now=0).messages
    0
    >>> partition_lag(PartitionOffsets("items", 4, 9, committed=5, oldest_ts=50.0), 40).seconds
    0.0
    """
    messages = max(0, o.end - o.position)
    if messages == 0:
        seconds = 0.0
    elif o.oldest_ts is None:
        seconds = math.nan
    else:
        seconds = max(0.0, now - o.oldest_ts)
    return PartitionLag(o.topic, o.partition, messages, seconds, o.end, o.committed)


@dataclass(frozen=True)
class Snapshot:
    """One poll's result: the lag of every partition, and when it was measured."""

    group: str
    lags: tuple[PartitionLag, ...]
    at: float


class LagCollector(Collector):
    """Exposes the latest snapshot. Each poll replaces the snapshot whole, so a scrape
    (prometheus-client serves from its own thread) never sees half an update."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.snapshot: Snapshot | None = None
        self.poll_errors = 0

    def update(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def failed(self) -> None:
        self.poll_errors += 1

    def collect(self) -> Iterator[Any]:
        labels = ["group", "topic", "partition"]
        messages = GaugeMetricFamily(
            "interest_consumergroup_lag_messages",
            "Log end offset minus the consumer group's committed offset",
            labels=labels,
        )
        seconds = GaugeMetricFamily(
            "interest_consumergroup_lag_seconds",
            "Age of the oldest unprocessed message (the one at the committed offset); "
            "0 when caught up",
            labels=labels,
        )
        committed = GaugeMetricFamily(
            "interest_consumergroup_committed_offset",
            "Offset the consumer group committed (absent: never committed)",
            labels=labels,
        )
        end = GaugeMetricFamily(
            "interest_partition_log_end_offset",
            "Log end offset (high watermark) of the partition",
            labels=["topic", "partition"],
        )
        snap = self.snapshot
        for lag in snap.lags if snap else ():
            where = [snap.group, lag.topic, str(lag.partition)]  # type: ignore[union-attr]
            messages.add_metric(where, lag.messages)
            seconds.add_metric(where, lag.seconds)
            if lag.committed is not None:
                committed.add_metric(where, lag.committed)
            end.add_metric([lag.topic, str(lag.partition)], lag.end)
        yield from (messages, seconds, committed, end)
        last = GaugeMetricFamily(
            "interest_lag_exporter_last_poll_timestamp_seconds",
            "When the offsets exposed here were read (Unix time)",
            labels=["group"],
        )
        if snap:
            last.add_metric([self.group], snap.at)
        yield last
        errors = CounterMetricFamily(
            "interest_lag_exporter_poll_errors",
            "Polls that failed (broker unreachable or too slow); the last values stay exposed",
            labels=["group"],
        )
        errors.add_metric([self.group], self.poll_errors)
        yield errors


def kafka_options(settings: Any) -> dict[str, Any]:
    """aiokafka client options for the Kafka security settings of `streams.config.Settings`
    (the same SASL/TLS settings the worker uses)."""
    import ssl

    context = None
    if settings.kafka_ssl_cafile is not None:
        context = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile))
    if settings.kafka_sasl_mechanism is not None:
        password = settings.kafka_sasl_password
        return {
            "security_protocol": "SASL_SSL" if context else "SASL_PLAINTEXT",
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": None if password is None else password.get_secret_value(),
            "ssl_context": context,
        }
    return {"security_protocol": "SSL", "ssl_context": context} if context else {}


class OffsetReader:
    """The broker side: committed offsets, log end offsets and oldest unprocessed message
    timestamps of one group's partitions of `topics` (see the module docstring)."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: Sequence[str],
        fetch_timeout_s: float = 5.0,
        **kafka: Any,
    ) -> None:
        self.bootstrap, self.group, self.topics = bootstrap, group, tuple(topics)
        self.fetch_timeout_s = fetch_timeout_s
        self.kafka = kafka
        self._admin: Any = None
        self._consumer: Any = None

    async def start(self) -> OffsetReader:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient

        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.kafka)
        await self._admin.start()
        # no group: it reads wherever it seeks and commits nothing
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            **self.kafka,
        )
        await self._consumer.start()
        return self

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()
        self._consumer = self._admin = None

    async def partitions(self) -> list[Any]:
        from aiokafka import TopicPartition

        existing = set(await self._admin.list_topics())
        wanted = [t for t in self.topics if t in existing]
        if not wanted:
            return []
        described = await self._admin.describe_topics(wanted)
        return sorted(
            TopicPartition(d["topic"], p["partition"])
            for d in described
            if d["error_code"] == 0
            for p in d["partitions"]
        )

    async def read(self) -> list[PartitionOffsets]:
        tps = await self.partitions()
        if not tps:
            return []
        found = await self._admin.list_consumer_group_offsets(self.group, partitions=tps)
        committed = {tp: o.offset for tp, o in found.items() if o.offset >= 0}
        never = [tp for tp in tps if tp not in committed]
        starts = await self._consumer.beginning_offsets(never) if never else {}
        known = {
            tp: PartitionOffsets(tp.topic, tp.partition, 0, committed.get(tp), starts.get(tp, 0))
            for tp in tps
        }
        end, oldest = await self._fetch_at(tps, {tp: o.position for tp, o in known.items()})
        return [
            replace(o, end=end[tp], oldest_ts=oldest.get(tp))
            for tp, o in known.items()
            if tp in end
        ]

    async def _fetch_at(
        self, tps: list[Any], position: dict[Any, int]
    ) -> tuple[dict[Any, int], dict[Any, float]]:
        """Fetch at each position: the high watermark of an answer that came after the
        seek, and the timestamp of the first record at or after the position. Partitions
        the broker did not answer within the timeout are left out."""
        c = self._consumer
        if set(c.assignment()) != set(tps):
            c.assign(tps)
        c.resume(*tps)
        asked_ms = time.time() * 1000
        for tp in tps:
            c.seek(tp, position[tp])
        end: dict[Any, int] = {}
        oldest: dict[Any, float] = {}
        pending = set(tps)
        deadline = time.monotonic() + self.fetch_timeout_s
        while pending and time.monotonic() < deadline:
            records = await c.getmany(*pending, timeout_ms=200)
            for tp, batch in records.items():
                first = next((r for r in batch if r.offset >= position[tp]), None)
                if first is not None and tp not in oldest:
                    oldest[tp] = first.timestamp / 1000
            for tp in list(pending):
                answered = c.last_poll_timestamp(tp)
                highwater = c.highwater(tp)
                if answered is None or answered < asked_ms or highwater is None:
                    continue
                if highwater > position[tp] and tp not in oldest:
                    continue  # behind: wait for the record at the position
                end[tp] = highwater
                pending.discard(tp)
                c.pause(tp)
        if pending:
            log.warning("no fetch answer within %.0fs for %s", self.fetch_timeout_s, pending)
        return end, oldest


async def poll_forever(
    reader: OffsetReader,
    collector: LagCollector,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    """Read, compute and publish a snapshot every `interval_s` until `stop` is set. A
    failed poll is counted and logged; the previous snapshot stays exposed."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            offsets = await asyncio.wait_for(reader.read(), timeout=max(interval_s, 10.0) * 3)
            now = time.time()
            lags = tuple(partition_lag(o, now) for o in offsets)
            collector.update(Snapshot(reader.group, lags, now))
        except Exception as err:  # broker down or slow: keep polling
            collector.failed()
            log.warning("lag poll failed: %s: %s", type(err).__name__, err)
        await _sleep(stop, interval_s - (time.monotonic() - started))


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max(0.0, seconds))


async def run_exporter(
    bootstrap: str,
    group: str,
    topics: Iterable[str],
    host: str,
    port: int,
    interval_s: float,
    kafka: dict[str, Any] | None = None,
) -> None:
    """Serve `/metrics` on host:port and poll until SIGINT/SIGTERM."""
    from prometheus_client import start_http_server

    collector = LagCollector(group)
    registry = CollectorRegistry()
    registry.register(collector)
    server, thread = start_http_server(port, addr=host, registry=registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reader = OffsetReader(bootstrap, group, list(topics), **(kafka or {}))
    print(
        f"lag exporter: group {group} on {bootstrap}, every {interval_s:g}s,"
        f" http://{host}:{port}/metrics",
        flush=True,
    )
    try:
        while not stop.is_set():  # the broker may not be up yet
            try:
                await reader.start()
                break
            except Exception as err:
                await reader.close()
                log.warning("broker %s not reachable yet: %s", bootstrap, err)
                await _sleep(stop, interval_s)
        await poll_forever(reader, collector, interval_s, stop)
    finally:
        await reader.close()
        server.shutdown()
        thread.join(timeout=5)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `interest-stream lag-exporter` (defaults from INTEREST_* settings)."""
    parser.add_argument("--broker", default=None, help="HOST:PORT (default $INTEREST_BROKER)")
    parser.add_argument(
        "--group", default=None, help="consumer group (default $INTEREST_APP_ID, the workers')"
    )
    parser.add_argument(
        "--topics",
        default=",".join(INPUT_TOPICS),
        help="comma-separated topics to watch (default: the workers' input topics)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL_S,
        help=f"seconds between polls (default {DEFAULT_INTERVAL_S:g})",
    )
    parser.set_defaults(func=cmd_lag_exporter)


def cmd_lag_exporter(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from streams.config import Settings

    try:
        given = {"broker": args.broker, "app_id": args.group}
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.interval <= 0:
        print("error: --interval must be > 0", file=sys.stderr)
        return 2
    topics = [t.strip() for t in args.topics.split(",") if t.strip()]
    try:
        asyncio.run(
            run_exporter(
                settings.broker,
                settings.app_id,
                topics,
                args.host,
                args.port,
                args.interval,
                kafka_options(settings),
            )
        )
    except OSError as err:  # the port is taken, a CA file is missing
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="interest-stream lag-exporter",
        description="Serve a consumer group's lag (messages, seconds) on /metrics.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
