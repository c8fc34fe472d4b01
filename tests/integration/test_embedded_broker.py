"""The embedded Tansu broker, for real: topics, keyed produce and consume, clean stop."""

from __future__ import annotations

import asyncio
import socket

import pytest

from streams.embedded import BrokerError, EmbeddedBroker, create_topics, ensure_topics

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path):
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as b:
        yield b


async def roundtrip(bootstrap: str, n: int) -> dict[int, set[bytes]]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(n):
            await producer.send("events.click", f"v{i}".encode(), key=f"u{i % 7}".encode())
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        "events.click", bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    keys: dict[int, set[bytes]] = {}
    got = 0
    try:
        while got < n:
            batch = await consumer.getmany(timeout_ms=5000)
            if not batch:
                break
            for tp, msgs in batch.items():
                got += len(msgs)
                keys.setdefault(tp.partition, set()).update(m.key for m in msgs)
    finally:
        await consumer.stop()
    assert got == n
    return keys


def test_topics_get_the_partitions_we_ask_for(broker: EmbeddedBroker) -> None:
    found = ensure_topics(broker.bootstrap, 4)
    assert found["events.click"] == 4 and found["events.dlq"] == 1
    assert ensure_topics(broker.bootstrap, 4) == found  # idempotent
    with pytest.raises(BrokerError, match="partition counts"):
        asyncio.run(create_topics(broker.bootstrap, {"events.click": 8}))


def test_keyed_messages_round_trip_and_stay_on_one_partition(broker: EmbeddedBroker) -> None:
    ensure_topics(broker.bootstrap, 4)
    keys = asyncio.run(roundtrip(broker.bootstrap, 200))
    seen = [k for ks in keys.values() for k in ks]
    assert sorted(seen) == sorted({f"u{i}".encode() for i in range(7)})  # one partition per key


def test_stop_frees_the_port(tmp_path) -> None:
    b = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    port = b.port
    b.stop()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # would raise if tansu still held it
