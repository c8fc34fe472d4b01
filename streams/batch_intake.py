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
of other topics take Faust's usual path. A rebalance clears the buffer (Faust's flow
control clears its own queues the same way): those messages were never acknowledged, so
the next owner reads them again from the committed offset.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections import deque
from collections.abc import Collection
from contextlib import suppress
from typing import Any

log = logging.getLogger("streams.batch_intake")


class BatchBuffer:
    """Raw messages in arrival order, taken in batches; `maxsize` bounds what the fetch
    loop may read ahead (beyond it, the fetch loop waits)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: deque[Any] = deque()
        self._want = 1  # how many messages `take` is waiting for
        self._enough = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    def __len__(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return len(self._items) >= self.maxsize

    def put(self, message: Any) -> None:
        items = self._items
        items.append(message)
        n = len(items)
        if n >= self._want:
            self._enough.set()
        if n >= self.maxsize:
            self._space.clear()

    async def wait_for_space(self) -> None:
        await self._space.wait()

    def clear(self) -> None:
        """Drop what is buffered (rebalance: called by Faust's flow control)."""
        if self._items:
            log.info("rebalance: dropped %d buffered messages (not acknowledged)", len(self))
        self._items.clear()
        self._space.set()

    async def take(self, max_n: int, within: float) -> list[Any]:
        """Up to `max_n` messages: waits for the first, then at most `within` seconds for
        the batch to fill."""
        if not self._items:
            self._want = 1
            self._enough.clear()
            await self._enough.wait()
        if len(self._items) < max_n:
            self._want = max_n
            self._enough.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._enough.wait(), within)
        items = self._items
        batch = [items.popleft() for _ in range(min(max_n, len(items)))]
        if len(items) < self.maxsize:
            self._space.set()
        return batch


def install(consumer: Any, topics: Collection[str], buffer: BatchBuffer) -> None:
    """Make `consumer` (a Faust consumer) put messages of `topics` into `buffer` instead
    of handing them to the conductor one by one."""
    batched = frozenset(topics)

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
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                await self.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in self.getmany(timeout=1.0):
                    since_yield += 1
                    if since_yield > 1000:
                        await sleep(0)
                        since_yield = 0
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
                    if message.topic in batched:
                        if buffer.full():
                            await buffer.wait_for_space()
                        # after any wait: a rebalance since this message was fetched seeks
                        # back to the committed offset, so it is read again; taking it now
                        # would move the read offset past the messages the seek re-fetches
                        if suspended() or message.generation_id != app.consumer_generation_id:
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
