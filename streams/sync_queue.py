"""The queue between the stream and Qdrant: latest pending state per user, written in the
background with retries, several writes in flight.

Why several in flight: the worker applies a micro-batch on its event loop in one go
(~0.2-0.3 s for 2,000 events), and a write of 256 user points takes ~0.15 s in Qdrant's
local-mode process. With one write at a time the next write could only start when the loop
was free again, so Qdrant's process sat idle for much of each batch (bench/pipeline.py saw it
busy ~60 % of the time under a backlog). Writes are handed to one writer thread in order, so
the thread starts the next queued write the moment the last one returns.

Order and correctness: writes run one after another in that thread, in the order they were
taken, and each takes a user's latest state at that moment, so a later write of a user
always carries a newer state. A failed write puts its entries back unless the user was
marked again or is in a later write (both newer); a write settles in order (done callbacks
run on the event loop as the thread finishes them).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from streams.sink import QdrantSink, RecordPoint, UserPoint, _user_parts
from streams.state import DEFAULT_PARAMS

log = logging.getLogger(__name__)

__all__ = ["SyncQueue"]

Entry = UserPoint | RecordPoint


@dataclass(eq=False)
class _Write:
    """A write handed to the writer thread: its users and deletions, and its future."""

    points: dict[str, Entry]
    deletes: dict[str, None]
    future: asyncio.Future[tuple[float, float, list[str]]]

    def users(self) -> set[str]:
        return {*self.points, *self.deletes}


class SyncQueue:
    """Latest pending state per user, written to a `QdrantSink` by a background task.

    `mark` and `mark_deleted` never block: a user marked many times before the next write
    starts is written once, with its latest state. `run` starts writes of what is pending
    (deletions, then upserts of at most `max_points` users, longest-waiting first) in one
    worker thread, so calls are serialised and in order, with up to `max_writes` of them
    queued for that thread at once; when a write fails its entries go back (unless newer
    ones arrived meanwhile) and new writes wait an exponential backoff. Writes run in
    `executor` when given (it must have one thread, to keep them in order), else in a
    thread of its own. Use from one event loop; not thread-safe.
    """

    def __init__(
        self,
        sink: QdrantSink,
        *,
        backoff_start: float = 0.1,
        backoff_factor: float = 2.0,
        backoff_max: float = 5.0,
        jitter: float = 0.1,
        on_flushed: Callable[[list[Entry], float], None] | None = None,
        executor: Executor | None = None,
        params: Any = None,
        max_points: int = 256,
        max_writes: int = 3,
    ) -> None:
        if max_points < 1 or max_writes < 1:
            raise ValueError("max_points and max_writes must be at least 1")
        self.sink = sink
        # points per write call: a user marked just after a write was taken waits for the
        # writes ahead of it, so caps bound that wait (~0.15 s a full write in local mode)
        self.max_points = max_points
        self.max_writes = max_writes
        # StateParams of the records queued with `mark_record` (None: the defaults)
        self.params = DEFAULT_PARAMS if params is None else params
        self.backoff_start = backoff_start
        self.backoff_factor = backoff_factor
        self.backoff_max = backoff_max
        self.jitter = jitter
        #: called after each successful upsert with the points and the time.time() at which
        #: they became visible in Qdrant (for the freshness metric)
        self.on_flushed = on_flushed
        self.upserted = 0  # points written
        self.deleted = 0  # users deleted
        self.failures = 0  # failed write calls
        self.last_flush_s = 0.0  # duration of the last successful write call
        self.dropped = 0  # points or records that failed to build (a bug: logged)
        self._points: dict[str, Entry] = {}
        self._deletes: dict[str, None] = {}  # an ordered set
        self._writes: deque[_Write] = deque()  # in flight, oldest first
        self._failed_in_row = 0
        self._outage_since: float | None = None
        self._retry_at = 0.0  # loop time before which no new write starts (backoff)
        self._wake = asyncio.Event()  # something was marked, or a write settled
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop `_wake` belongs to
        # a caller's executor (one thread for all its Qdrant calls) is shared, never shut down
        self._own_executor = executor is None
        self._executor: Executor | None = executor

    @property
    def pending(self) -> int:
        """Users whose latest state or deletion is not yet known to be in Qdrant, counting
        the writes in flight; a user in flight and marked again meanwhile counts once."""
        if not self._writes:
            return len(self._points) + len(self._deletes)  # disjoint
        return len(set().union(self._points, self._deletes, *(w.users() for w in self._writes)))

    @property
    def in_flight(self) -> int:
        """Writes handed to the writer thread and not settled yet."""
        return len(self._writes)

    def mark(self, point: UserPoint) -> None:
        """Queue a user's latest state (replaces an earlier one, cancels a pending delete).

        Checked here, so a point that could never be written fails its caller, not the queue.
        """
        _user_parts(point, self.sink.dim)
        self._deletes.pop(point.user_id, None)
        self._points[point.user_id] = point
        self._wake.set()

    def mark_record(self, point: RecordPoint) -> None:
        """Queue a user's latest record, built into a point where it is written (the bytes
        are checked there: a bad record is logged and dropped, a bug)."""
        self._deletes.pop(point.user_id, None)
        self._points[point.user_id] = point
        self._wake.set()

    def mark_deleted(self, user_id: str) -> None:
        """Queue a user's deletion (cancels a pending state of that user)."""
        self._points.pop(user_id, None)
        self._deletes[user_id] = None
        self._wake.set()

    # -- writing ---------------------------------------------------------------------------

    def _build(
        self, taken: dict[str, Entry]
    ) -> tuple[dict[str, Entry], list[Any], list[RecordPoint]]:
        """Points with their checked structs, and the records to be built where they are
        written."""
        points: dict[str, Entry] = {}
        structs, records = [], []
        for user_id, p in taken.items():
            if isinstance(p, RecordPoint):
                points[user_id] = p
                records.append(p)
                continue
            try:
                structs.append(self.sink.user_struct(p))
            except Exception:
                log.exception("building the Qdrant point of user %r failed; skipped", user_id)
                self.dropped += 1
                continue
            points[user_id] = p
        return points, structs, records

    def _write(
        self, deletes: list[str], structs: list[Any], records: list[RecordPoint]
    ) -> tuple[float, float, list[str]]:
        """In the writer thread: returns (time.time() when visible, seconds taken, users
        whose record did not build)."""
        start = time.perf_counter()
        if deletes:
            self.sink.delete_users(deletes)
        if structs:
            self.sink.upsert_user_structs(structs)
        failed = self.sink.upsert_user_records(records, self.params) if records else []
        return time.time(), time.perf_counter() - start, failed

    def _can_start(self, loop: asyncio.AbstractEventLoop) -> bool:
        return (
            bool(self._points or self._deletes)
            and len(self._writes) < self.max_writes
            and loop.time() >= self._retry_at
        )

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take what is pending (at most `max_points` users, longest-waiting first) and
        hand it to the writer thread, behind the writes already there."""
        taken, deletes = self._points, self._deletes
        if len(taken) > self.max_points:
            taken = {u: taken.pop(u) for u in list(itertools.islice(taken, self.max_points))}
        else:
            self._points = {}
        self._deletes = {}
        points, structs, records = self._build(taken)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="qdrant-sink")
        future = loop.run_in_executor(self._executor, self._write, list(deletes), structs, records)
        write = _Write(points, deletes, future)
        self._writes.append(write)
        future.add_done_callback(lambda _: self._settle(write))

    def _settle(self, write: _Write) -> None:
        """On the event loop, when the thread is done with `write` (in the order written)."""
        self._writes.remove(write)
        self._wake.set()
        try:
            visible_at, took, failed = write.future.result()
        except BaseException as exc:  # cancelled too (the loop is closing): keep the entries
            self._put_back(write)
            if isinstance(exc, Exception):
                self._failed(exc)
            return
        self._succeeded(took)
        points = write.points
        for user_id in failed:
            points.pop(user_id, None)
        self.dropped += len(failed)
        self.upserted += len(points)
        self.deleted += len(write.deletes)
        if points and self.on_flushed is not None:
            try:
                self.on_flushed(list(points.values()), visible_at)
            except Exception:
                log.exception("on_flushed hook failed")

    def _put_back(self, write: _Write) -> None:
        """Requeue a failed write's entries, except users marked or deleted again meanwhile
        or in a later write (all newer)."""
        newer = set().union(self._points, self._deletes, *(w.users() for w in self._writes))
        for user_id, point in write.points.items():
            if user_id not in newer:
                self._points[user_id] = point
        for user_id in write.deletes:
            if user_id not in newer:
                self._deletes[user_id] = None

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self._failed_in_row += 1
        self._retry_at = asyncio.get_running_loop().time() + self._backoff()
        if self._outage_since is None:  # one warning per outage, not per retry
            self._outage_since = time.monotonic()
            log.warning(
                "Qdrant write failed (%s: %s); keeping %d pending and retrying with backoff",
                type(exc).__name__,
                exc,
                self.pending,
            )
        else:
            log.debug("Qdrant write failed again (%s: %s)", type(exc).__name__, exc)

    def _succeeded(self, took: float) -> None:
        self.last_flush_s = took
        if self._outage_since is not None:
            log.warning(
                "Qdrant writes recovered after %d failed attempts in %.1f s",
                self._failed_in_row,
                time.monotonic() - self._outage_since,
            )
        self._outage_since = None
        self._failed_in_row = 0
        self._retry_at = 0.0

    def _backoff(self) -> float:
        base = self.backoff_start * self.backoff_factor ** max(0, self._failed_in_row - 1)
        return min(self.backoff_max, base) * (1.0 + random.uniform(0.0, self.jitter))

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Use from `loop` on: a queue used under an earlier `asyncio.run` (a `flush`, say)
        has writes that will never settle there, so their outcome is unknown and their
        entries go back, and its wake-up event belonged to that loop."""
        if self._loop is loop:
            return
        for write in [w for w in self._writes if w.future.get_loop() is not loop]:
            self._writes.remove(write)
            self._put_back(write)
        self._wake = asyncio.Event()
        self._loop = loop

    async def _step(self, loop: asyncio.AbstractEventLoop, until: float) -> None:
        """Start the writes that may start now, else wait (at most until loop time `until`)
        for a mark, a settled write or the end of a backoff."""
        if self._can_start(loop):
            while self._can_start(loop):
                self._start(loop)
            return
        self._wake.clear()
        timeout = until - loop.time()
        if (self._points or self._deletes) and len(self._writes) < self.max_writes:
            timeout = min(timeout, self._retry_at - loop.time())  # waiting out a backoff
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(timeout, 0.0))

    async def run(self, stop: asyncio.Event, *, final_timeout: float = 10.0) -> None:
        """Write pending entries until `stop` is set, then try once more for `final_timeout`."""
        loop = asyncio.get_running_loop()
        self._bind(loop)
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: self._wake.set())
        try:
            while not stop.is_set():
                await self._step(loop, loop.time() + 3600.0)
            if not await self.flush(final_timeout):
                log.warning("stopping with %d entries not written to Qdrant", self.pending)
        finally:
            stopping.cancel()
            if self._own_executor and self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None

    async def flush(self, timeout: float = 10.0) -> bool:
        """Write until nothing is pending (True) or `timeout` seconds have passed (False);
        writes still in flight then carry on and settle later."""
        loop = asyncio.get_running_loop()
        self._bind(loop)
        deadline = loop.time() + timeout
        while self.pending:
            if loop.time() >= deadline:
                return False
            await self._step(loop, deadline)
        return True
