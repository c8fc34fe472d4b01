"""Two fixes to faust-streaming (0.15.3), found by killing workers mid-stream (bench/chaos.py).

1. Changelog log ends. Faust restores a table partition by reading its changelog up to
   the "highwater" it gets from ListOffsets(latest). Tansu, the embedded broker, answers
   that with the base offset of the partition's last record batch + 1, not the log end,
   and Faust's producer sends several changelog records per batch. So on Tansu a worker
   restarted on its own RocksDB after kill -9, which had persisted the offset of a later
   record of that batch, refused to start (ConsistencyError, on every restart), and a
   worker taking a partition over stopped restoring short of the end. A fetch's high
   watermark is the log end on Tansu and on Kafka alike: the consumer's `highwaters`
   answers the larger of the two.

2. Offsets committed before the changelog was written. Before committing offsets, Faust
   flushes its producer, but the flush of its own send buffer (where table writes wait to
   be handed to the Kafka client) returns as soon as 0.1 s pass without a send, e.g. while
   the first send waits for the changelog's metadata or a batch keeps the event loop busy.
   Offsets whose table writes were still in that buffer could be committed; a crash then
   lost the writes, and a worker restoring the partition from the changelog lost those
   events. (Seen once in a 2-worker kill run: the events at offsets 0-2 of two partitions
   were committed by the killed worker while the changelog held fewer records than that
   batch had written.) The producer's `flush` here waits until every message handed to
   it before the flush has been answered by the broker.

`App` is `faust.App` with both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import faust

log = logging.getLogger("streams.faust_fixes")


async def fetch_log_ends(
    bootstrap: str | list[str],
    tps: Iterable[Any],
    listed: Mapping[Any, int] | None = None,
    timeout: float = 10.0,
    **kafka: Any,
) -> dict[Any, int]:
    """The log end offset of each partition in `tps` (Faust TPs or aiokafka
    TopicPartitions): the high watermark of a fetch. Reading starts one before `listed`
    (the ListOffsets answers, if known), so only the last record batch comes back.
    Partitions without an answer within `timeout` are left out."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    parts = {TopicPartition(tp.topic, tp.partition): tp for tp in tps}
    if not parts:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        **kafka,
    )
    await consumer.start()
    try:
        consumer.assign(list(parts))
        for ktp, tp in parts.items():
            consumer.seek(ktp, max((listed or {}).get(tp, 0) - 1, 0))
        ends: dict[Any, int] = {}
        pending = set(parts)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            await consumer.getmany(*pending, timeout_ms=200)
            for ktp in list(pending):
                highwater = consumer.highwater(ktp)
                if highwater is not None:
                    ends[parts[ktp]] = highwater
                    pending.discard(ktp)
        return ends
    finally:
        await consumer.stop()


class App(faust.App):
    """`faust.App` with the module docstring's two fixes (consumer and producer)."""

    def _new_consumer(self) -> Any:
        from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list

        consumer = super()._new_consumer()
        listed_highwaters = consumer.highwaters
        servers = server_list(self.conf.broker, 9092)
        auth = dict(credentials_to_aiokafka_auth(self.conf.broker_credentials))

        async def highwaters(*tps: Any) -> Mapping[Any, int]:
            listed = dict(await listed_highwaters(*tps))
            try:
                fetched = await fetch_log_ends(servers, tps, listed, **auth)
            except Exception as err:  # keep the broker's answer, as plain Faust would
                log.warning("could not fetch log ends of %d partitions: %s", len(tps), err)
                return listed
            ends = {tp: max(listed.get(tp) or 0, fetched.get(tp, 0)) for tp in tps}
            for tp, end in ends.items():
                if end != listed.get(tp):
                    log.info("log end of %s: %d (ListOffsets answered %s)", tp, end, listed.get(tp))
            return ends

        consumer.highwaters = highwaters
        return consumer

    def _new_producer(self) -> Any:
        producer = super()._new_producer()
        flush_client = producer.flush
        buffer = producer.buffer
        put = buffer.put
        unsent: set[asyncio.Future] = set()  # table writes etc. not acknowledged yet

        def put_tracked(fut: Any) -> None:
            unsent.add(fut)
            fut.add_done_callback(unsent.discard)
            put(fut)

        async def flush() -> None:
            """Every message handed to the producer before this call sent and answered by
            the broker (what committing offsets waits for). Messages added meanwhile are
            not waited for: under a steady stream the buffer is never empty. A failed send
            is logged by Faust, which commits all the same, as before."""
            if unsent:
                await asyncio.gather(*list(unsent), return_exceptions=True)
            await flush_client()

        buffer.put = put_tracked
        producer.flush = flush
        return producer
