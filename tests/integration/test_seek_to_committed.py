"""`streams.batch_intake.seek_to_committed` against the real broker: partitions committed at
0 or not at all are sought too (aiokafka's own leaves them where the read-ahead left them,
and messages the worker dropped unacknowledged were never read again)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from streams.batch_intake import seek_to_committed
from streams.embedded import EmbeddedBroker, ensure_topics

pytestmark = pytest.mark.integration

N = 10


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory):
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("seek") / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, 1)
        asyncio.run(produce(broker.bootstrap))
        yield broker.bootstrap


async def produce(bootstrap: str) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic in ("events.click", "events.search"):
            for i in range(N):
                await producer.send(topic, f"m{i}".encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()


async def read_all(consumer, want: int) -> list[tuple[str, int]]:
    got: list[tuple[str, int]] = []
    for _ in range(20):
        batch = await consumer.getmany(timeout_ms=500)
        got += [(tp.topic, m.offset) for tp, ms in batch.items() for m in ms]
        if len(got) >= want:
            break
    return got


def offsets_read_again(
    bootstrap: str, group: str, commit: int | None, ours: bool, partitions: Any = None
):
    """Read both topics to their end in `group` (committing `commit` on events.click first,
    if given), seek to committed (ours, of `partitions` if given, or aiokafka's), and
    return what is read next."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    async def go():
        consumer = AIOKafkaConsumer(
            "events.click",
            "events.search",
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            first = await read_all(consumer, 2 * N)
            assert len(first) == 2 * N
            if commit is not None:
                click = TopicPartition("events.click", 0)
                await consumer.commit({click: OffsetAndMetadata(commit, "")})
            if ours:  # events.search is not "ours" here: like a changelog, left alone
                committed = await seek_to_committed(
                    consumer, {"events.click"}, partitions=partitions
                )
            else:
                committed = await consumer.seek_to_committed()
            again = await read_all(consumer, 1)
            return {tp.topic: off for tp, off in committed.items()}, sorted(again)
        finally:
            await consumer.stop()

    return asyncio.run(go())


@pytest.mark.parametrize("commit", [None, 0])
def test_a_partition_committed_at_0_or_never_is_read_again_from_its_start(bootstrap, commit):
    committed, again = offsets_read_again(bootstrap, f"ours-{commit}", commit, ours=True)
    assert committed["events.click"] == commit
    assert again == [("events.click", i) for i in range(N)]  # not events.search


@pytest.mark.parametrize("commit", [None, 0])
def test_aiokafkas_own_seek_leaves_those_partitions_where_they_are(bootstrap, commit):
    """Why `seek_to_committed` exists: if this fails, aiokafka seeks them now itself."""
    _, again = offsets_read_again(bootstrap, f"theirs-{commit}", commit, ours=False)
    assert again == []


def test_a_partition_committed_further_on_is_read_from_there(bootstrap):
    committed, again = offsets_read_again(bootstrap, "ours-4", 4, ours=True)
    assert committed["events.click"] == 4
    assert again == [("events.click", i) for i in range(4, N)]


def test_given_partitions_only_those_still_assigned_are_sought(bootstrap):
    from faust.types import TP  # what the worker passes: Faust's own partition tuples

    asked = [TP("events.click", 0), TP("items", 0)]  # items: not assigned to this consumer
    committed, again = offsets_read_again(bootstrap, "ours-given", 3, True, partitions=asked)
    assert committed == {"events.click": 3}
    assert again == [("events.click", i) for i in range(3, N)]
