"""Faust's consumer delivering the worker's input messages in batches.

Faust hands every fetched message to its conductor on its own: per message the fetch loop
starts two tasks (`wait_first` of the delivery and of the flow-control event), the
conductor builds an Event and queues it, and the agent's stream takes it with an event-loop
turn, context variables, sensors and processors, then acknowledges it alone. On this
2-core machine that is ~135 us per message: a Faust agent that does nothing tops out at
~7,300 messages/s, less than the worker's target for its whole per-event budget.

Here the fetch loop (`Consumer._drain_messages`, replaced on the consumer instance) appends
the raw `faust.types.Message` of the chosen topics to a `BatchBuffer`, and the worker takes
them in batches. Offsets stay Faust's business: the topic is registered with the conductor
(subscription, acking), a message is acknowledged with `message.ack(consumer)` once its
batch is written, and Faust's committer commits what is acknowledged, as before. Messages
of other topics take Faust's usual path. After a rebalance the buffer is cleared: those
messages were never acknowledged, so their owner reads them again from the committed
offset.

Reading them again takes care, as every message dropped unacknowledged must be fetched
again by a seek that comes after its fetch:
- aiokafka's `seek_to_committed` seeks only partitions with a committed offset above 0
  (`if offset and offset > 0`): in a new group, or one committed at 0, the position stays
  where the read-ahead left it. A restored worker in a new group dropped the 5,040
  messages it had read ahead during recovery and never read them again.
  `seek_to_committed` here seeks those partitions too.
- the buffer is not one of Faust's flow-control queues: those are cleared when flow
  resumes, which is after the seek that ends recovery, so messages fetched after the seek
  were dropped and never read again. It is cleared when that seek ends instead.
- the fetch loop may be between the messages of one fetch when a seek or a rebalance
  comes. What is left of that fetch is skipped (buffering it would move Faust's read
  offset past what the seek reads again, and Faust then skips those as already read), and
  as it cannot tell a fetch from before the seek from one after it, the loop seeks those
  partitions to their committed offsets again itself.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections import deque
from collections.abc import Callable, Collection
from contextlib import suppress
from typing import Any

log = logging.getLogger("streams.batch_intake")


class BatchBuffer:
    """Raw messages in arrival order, taken in batches of at most a given total cost (each
    message costs `cost(message)` >= 1; default 1: batches of at most n messages);
    `maxsize` bounds how many messages the fetch loop may read ahead (beyond it, the fetch
    loop waits)."""

    def __init__(self, maxsize: int, cost: Callable[[Any], int] | None = None) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._cost = cost
        self._items: deque[Any] = deque()
        self._costs: deque[int] = deque()
        self._total = 0  # cost of what is buffered
        self._want = 1  # the total `take` is waiting for
        self._enough = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def put(self, message: Any) -> None:
        cost = 1 if self._cost is None else max(1, self._cost(message))
        self._items.append(message)
        self._costs.append(cost)
        self._total += cost
        if self._total >= self._want:
            self._enough.set()
        if len(self._items) >= self.maxsize:
            self._space.clear()

    async def wait_for_space(self) -> None:
        await self._space.wait()

    def clear(self) -> None:
        """Drop what is buffered (when a seek has just read it again)."""
        if self._items:
            log.info("dropped %d buffered messages (not acknowledged, read again)", len(self))
        self._items.clear()
        self._costs.clear()
        self._total = 0
        self._space.set()

    async def take(self, max_cost: int, within: float) -> list[Any]:
        """Messages in arrival order of a total cost of at most `max_cost` (at least one):
        waits for the first, then at most `within` seconds for the batch to fill."""
        if not self._items:
            self._want = 1
            self._enough.clear()
            await self._enough.wait()
        if self._total < max_cost:
            self._want = max_cost
            self._enough.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._enough.wait(), within)
        items, costs = self._items, self._costs
        if not items:  # cleared by a seek meanwhile
            return []
        batch, total = [items.popleft()], costs.popleft()
        while items and total + costs[0] <= max_cost:
            total += costs.popleft()
            batch.append(items.popleft())
        self._total -= total
        if len(items) < self.maxsize:
            self._space.set()
        return batch


async def seek_to_committed(
    kafka_consumer: Any,
    topics: Collection[str],
    reset: str = "earliest",
    partitions: Collection[Any] | None = None,
) -> dict[Any, Any]:
    """aiokafka's `AIOKafkaConsumer.seek_to_committed` (of `partitions` still assigned, or
    of all), also for the partitions of `topics` it leaves alone: committed at 0 (seeks to
    0) or not at all (seeks as `reset` says, the consumer's `auto_offset_reset`). Returns
    the committed offsets, as aiokafka's does. Other topics (Faust's changelogs, which
    Faust seeks itself) keep aiokafka's behaviour."""
    from aiokafka import TopicPartition

    if partitions is None:
        committed: dict[Any, Any] = await kafka_consumer.seek_to_committed()
    else:
        assigned = kafka_consumer.assignment()
        tps = {TopicPartition(tp.topic, tp.partition) for tp in partitions} & assigned
        if not tps:
            return {}
        committed = await kafka_consumer.seek_to_committed(*tps)
    ours = {tp: offset for tp, offset in committed.items() if tp.topic in topics}
    for tp, offset in ours.items():
        if offset == 0:
            kafka_consumer.seek(tp, 0)
    never = [tp for tp, offset in ours.items() if offset is None]
    if never:
        if reset == "latest":
            await kafka_consumer.seek_to_end(*never)
        else:
            await kafka_consumer.seek_to_beginning(*never)
    return committed


class _Seeks:
    """Counts seeks of the buffered topics' partitions, once as each starts and once as it
    ends: a fetch begun at another count, or during a seek, may be from before it."""

    def __init__(self) -> None:
        self.count = 0

    def around(self, seek: Any) -> Any:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            try:
                return await seek(*args, **kwargs)
            finally:
                self.count += 1

        return counted


def install(
    consumer: Any, topics: Collection[str], buffer: BatchBuffer, reset: str = "earliest"
) -> None:
    """Make `consumer` (Faust's aiokafka consumer) put messages of `topics` into `buffer`
    instead of handing them to the conductor one by one, with the seeks the module
    docstring describes. `reset` is the consumer's `auto_offset_reset`."""
    batched = frozenset(topics)
    seeks = _Seeks()
    thread = consumer._thread  # Faust's aiokafka driver: the Kafka client lives there

    async def thread_seek_to_committed(partitions: Collection[Any] | None = None) -> Any:
        kafka_consumer = thread._ensure_consumer()
        return await thread.call_thread(
            seek_to_committed, kafka_consumer, batched, reset, partitions
        )

    thread.seek_to_committed = thread_seek_to_committed
    perform_seek = seeks.around(consumer.perform_seek)
    plain_seek = consumer.seek
    counted_seek = seeks.around(plain_seek)

    async def perform_seek_and_clear() -> None:
        await perform_seek()
        # all were fetched before the seek, which reads them again (no wait since it ended)
        buffer.clear()

    async def seek(partition: Any, offset: int) -> None:
        await (counted_seek if partition.topic in batched else plain_seek)(partition, offset)

    consumer.perform_seek = perform_seek_and_clear
    consumer.seek = seek
    read_offset = consumer._read_offset
    skipped: set[Any] = set()  # partitions with skipped messages: to seek again

    async def seek_skipped() -> None:
        """Seek the partitions whose messages were skipped to their committed offsets (a
        rebalance's own seek will do if one is under way). On failure (broker away) they
        stay skipped and this is tried again."""
        try:
            committed = await thread_seek_to_committed(set(skipped))
        except Exception as err:
            log.warning("seeking %d partitions again failed (retrying): %r", len(skipped), err)
            await asyncio.sleep(0.5)
            return
        read_offset.update(
            {
                tp: offset if offset is not None and offset >= 0 else None
                for tp, offset in committed.items()
            }
        )
        log.info("read again from the committed offsets: %d partitions", len(skipped))
        skipped.clear()

    async def _drain_messages(self: Any, fetcher: Any) -> None:
        # Faust's loop (faust/transport/consumer.py, `Consumer._drain_messages`), with the
        # delivery of `batched` topics replaced by `buffer.put`
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        suspended = self.suspend_flow.is_set
        app = self.app
        put = buffer.put
        sleep = asyncio.sleep
        since_yield = 0

        def stale(message: Any, seeks_at: int) -> bool:
            # a seek or rebalance since (or while) the fetch began: the message may be
            # from before it, and buffering it would move the read offset past what the
            # seek reads again (Faust then skips those as read)
            return (
                seeks.count != seeks_at
                or seeks_at % 2 == 1
                or suspended()
                or message.generation_id != app.consumer_generation_id
            )

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                await self.sleep(0)
                if self.should_stop:
                    continue
                if skipped and not suspended() and seeks.count % 2 == 0:
                    await seek_skipped()  # (not during a seek: it may be the same one)
                seeks_at = seeks.count

                async for tp, message in self.getmany(timeout=1.0):
                    since_yield += 1
                    if since_yield > 1000:
                        await sleep(0)
                        since_yield = 0
                    batched_message = message.topic in batched
                    if batched_message and (tp in skipped or stale(message, seeks_at)):
                        skipped.add(tp)  # read again after `seek_skipped`
                        continue
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is not None and offset < r_offset:
                        continue  # read before (Faust drops these too)
                    if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, r_offset + 1, offset)
                    commit_every = self._commit_every
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if batched_message:
                        if buffer.full():
                            await buffer.wait_for_space()
                        if stale(message, seeks_at):  # checked again after the waits
                            skipped.add(tp)
                            continue
                        put(message)
                    else:
                        await self.wait_first(callback(message), self.suspend_flow.wait())
                    set_read_offset(tp, offset)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("broker stopped the consumer while shutting down")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    consumer._drain_messages = types.MethodType(_drain_messages, consumer)
