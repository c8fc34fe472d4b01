"""BatchBuffer: the batches the worker takes from the fetch loop (streams/batch_intake.py).
The fetch loop itself runs against the real broker in the integration and reliability
tests."""

from __future__ import annotations

import asyncio
import time

import pytest

from streams.batch_intake import BatchBuffer


def run(coro):
    return asyncio.run(coro)


def test_take_returns_a_full_batch_at_once_and_keeps_the_rest_in_order():
    async def go():
        buf = BatchBuffer(100)
        for i in range(7):
            buf.put(i)
        started = time.monotonic()
        first = await buf.take(5, within=10.0)
        return first, await buf.take(5, within=0.01), time.monotonic() - started

    first, second, took = run(go())
    assert first == [0, 1, 2, 3, 4]
    assert second == [5, 6]
    assert took < 1.0  # the full batch did not wait for `within`


def test_take_waits_for_the_first_message_then_at_most_within():
    async def go():
        buf = BatchBuffer(100)

        async def feed():
            await asyncio.sleep(0.05)
            buf.put("a")
            await asyncio.sleep(0.02)
            buf.put("b")

        feeder = asyncio.create_task(feed())
        started = time.monotonic()
        batch = await buf.take(10, within=0.3)
        await feeder
        return batch, time.monotonic() - started

    batch, took = run(go())
    assert batch == ["a", "b"]
    assert 0.3 <= took < 2.0


def test_a_batch_fills_before_within_when_enough_messages_arrive():
    async def go():
        buf = BatchBuffer(100)

        async def feed():
            for i in range(3):
                await asyncio.sleep(0.01)
                buf.put(i)

        feeder = asyncio.create_task(feed())
        started = time.monotonic()
        batch = await buf.take(3, within=30.0)
        await feeder
        return batch, time.monotonic() - started

    batch, took = run(go())
    assert batch == [0, 1, 2]
    assert took < 5.0


def test_a_full_buffer_holds_the_fetch_loop_until_a_batch_is_taken():
    async def go():
        buf = BatchBuffer(3)
        for i in range(3):
            buf.put(i)
        assert buf.full()
        waiter = asyncio.create_task(buf.wait_for_space())
        await asyncio.sleep(0.02)
        blocked = not waiter.done()
        await buf.take(2, within=0.01)
        await asyncio.wait_for(waiter, 1.0)
        return blocked, len(buf)

    assert run(go()) == (True, 1)


def test_clear_drops_the_buffered_messages_and_frees_space():
    async def go():
        buf = BatchBuffer(2)
        buf.put(1)
        buf.put(2)
        buf.clear()
        await asyncio.wait_for(buf.wait_for_space(), 1.0)
        buf.put(3)
        return await buf.take(5, within=0.01)

    assert run(go()) == [3]


def test_maxsize_must_be_positive():
    with pytest.raises(ValueError):
        BatchBuffer(0)


def test_batches_are_cut_by_total_cost_and_a_costly_message_still_goes_alone():
    async def go():
        buf = BatchBuffer(100, cost=lambda m: 10 if m.startswith("text") else 1)
        for m in ["c1", "c2", "text1", "c3", "text2", "text3"]:
            buf.put(m)
        return [await buf.take(n, within=0.01) for n in (12, 5, 5)], len(buf)

    batches, left = run(go())
    # c3 + text2 would cost 11 > 5; text2 alone costs 10 > 5 and is taken all the same
    assert batches == [["c1", "c2", "text1"], ["c3"], ["text2"]]
    assert left == 1


def test_a_take_waits_until_the_cost_not_the_count_is_reached():
    async def go():
        buf = BatchBuffer(100, cost=lambda m: m)

        async def feed():
            await asyncio.sleep(0.02)
            buf.put(3)
            await asyncio.sleep(0.02)
            buf.put(4)  # 7 >= 6: the batch is full

        feeder = asyncio.create_task(feed())
        started = time.monotonic()
        batch = await buf.take(6, within=30.0)
        await feeder
        return batch, time.monotonic() - started

    batch, took = run(go())
    assert batch == [3] and took < 5.0  # 3 + 4 > 6: the second waits for the next take
