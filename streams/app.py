"""The Faust app: topics, the users table, the batch agent, the parked-click timer, views.

One task takes the four user topics and `items` in micro-batches straight from Faust's
fetch loop (`streams.batch_intake`: Faust's per-message streams cost more than the whole
per-event budget) and hands each batch to `streams.worker.Processor`; a message is
acknowledged, so committed by Faust, once its batch is written. Faust couples a table write to the
partition of the *current event*; in a batch that is the last event of the batch, which
may belong to another user's partition. So every table read and write here runs under
`partition_context(topic, partition)` of the user's own messages: the write lands in the
changelog partition of the partition that owns the user, and RocksDB reads look in the
right partition's database.

Qdrant is a derived view: changed users are queued (`SyncQueue`) and upserted in the
background, so a Qdrant outage delays vectors but never the stream or the state.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import faust
import numpy as np
from faust.streams import _current_event

from streams.api import ApiError, ReadSide, user_id_of
from streams.batch_intake import BatchBuffer, install
from streams.batch_sizer import BatchSizer, message_cost
from streams.config import Settings
from streams.embedded import DLQ_TOPIC, INPUT_TOPICS
from streams.faust_fixes import App as FixedFaustApp
from streams.items import ItemCache
from streams.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from streams.metrics import Metrics
from streams.popularity import Popularity
from streams.ranking_metrics import Calibration
from streams.record import UserRecord
from streams.sink import QdrantSink, RecordPoint, UserPoint
from streams.status_page import register_status_page
from streams.sync_queue import SyncQueue
from streams.worker import BatchResult, Message, Processor, TextEncoder

log = logging.getLogger("streams.app")

TABLE = "users"


@dataclass
class _Context:
    """Stands in for a Faust event where only the partition matters (table writes)."""

    message: Any


@dataclass
class _Where:
    topic: str
    partition: int


@contextmanager
def partition_context(topic: str, partition: int) -> Iterator[None]:
    ctx = _Context(_Where(topic, partition))
    token = _current_event.set(weakref.ref(ctx))
    try:
        yield
    finally:
        _current_event.reset(token)


class Freshness:
    """Publish time (Kafka timestamp) -> vector visible in Qdrant, for the newest event
    behind each upserted point.

    Keeps the last `size` observations for /healthz percentiles (Prometheus histograms
    come with the metrics).
    """

    def __init__(self, size: int = 10_000) -> None:
        self.recent: deque[float] = deque(maxlen=size)
        self.count = 0

    def observe(self, points: list[UserPoint | RecordPoint], visible_at: float) -> list[float]:
        """Record the points' freshness; returns their publish times."""
        published = [float(t) for p in points if (t := p.published_at) is not None]
        for t in published:
            self.recent.append(visible_at - t)
        self.count += len(published)
        return published

    def summary(self) -> dict[str, float | int | None]:
        if not self.recent:
            return {"count": self.count, "p50_s": None, "p99_s": None}
        q = np.quantile(np.fromiter(self.recent, float), [0.5, 0.99])
        return {"count": self.count, "p50_s": round(q[0], 4), "p99_s": round(q[1], 4)}


@dataclass
class Runtime:
    """Everything the agent, the timer and the views share (one per worker process)."""

    settings: Settings
    processor: Processor
    sink: QdrantSink
    queue: SyncQueue
    items: ItemCache
    freshness: Freshness
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    parked: dict[str, tuple[str, int]] = field(default_factory=dict)  # user -> (topic, part)
    # (topic, partition) -> (next offset to process, publish time of the last processed)
    position: dict[tuple[str, int], tuple[int, float | None]] = field(default_factory=dict)
    scanned_for: frozenset = frozenset()  # the assignment the last table scan covered
    batches: int = 0
    started_at: float = field(default_factory=time.time)
    closing: bool = False  # stopping: batches taken from now on are left for the next run
    # partitions revoked in the rebalance under way: their messages still in the take
    # buffer belong to the next owner (cleared when the new assignment arrives)
    revoked: set[tuple[str, int]] = field(default_factory=set)
    writable: bool = True  # False once stopping goes on to close the tables


# how long stopping waits for the batch in flight (encoding a full batch on a slow CPU)
BATCH_FINISH_TIMEOUT_S = 20.0


class WorkerApp(FixedFaustApp):
    """The Faust app, stopped without losing a batch (SIGTERM, Ctrl-C).

    Faust stops the app before its tasks: it closes the tables, then cancels the tasks.
    Here the batch in flight first finishes (table, dead letters, Qdrant marks; at most
    BATCH_FINISH_TIMEOUT_S), and the batches taken after it stay unacknowledged: the next
    run reads them again.
    """

    intake: BatchBuffer | None = None  # set by create_app before the consumer exists
    fetch_max_wait_ms: int | None = None  # Settings.fetch_max_wait_ms (Faust: 1,500)

    def _new_consumer(self) -> Any:
        consumer = super()._new_consumer()
        if self.intake is not None:
            install(consumer, INPUT_TOPICS, self.intake, self.conf.consumer_auto_offset_reset)
        wait_ms = self.fetch_max_wait_ms
        thread = getattr(consumer, "_thread", None)
        if wait_ms is not None and thread is not None:
            create = thread._create_worker_consumer  # Faust hard-codes fetch_max_wait_ms

            def create_worker_consumer(*args: Any, **kwargs: Any) -> Any:
                kafka_consumer = create(*args, **kwargs)
                kafka_consumer._fetch_max_wait_ms = wait_ms  # read by aiokafka's start()
                return kafka_consumer

            thread._create_worker_consumer = create_worker_consumer
        return consumer

    async def on_stop(self) -> None:
        rt: Runtime | None = getattr(self, "runtime", None)
        if rt is None:
            await super().on_stop()
            return
        rt.closing = True
        try:
            await asyncio.wait_for(rt.lock.acquire(), BATCH_FINISH_TIMEOUT_S)
        except TimeoutError:
            log.warning(
                "stopping: the batch in flight did not finish within %g s; it is left for "
                "the next run",
                BATCH_FINISH_TIMEOUT_S,
            )
            rt.writable = False
            await super().on_stop()
            return
        try:
            rt.writable = False
            await super().on_stop()
        finally:
            rt.lock.release()


def create_app(settings: Settings, encoder: TextEncoder, sink: QdrantSink) -> faust.App:
    # faust.App with two fixes (streams/faust_fixes.py: changelog log ends on Tansu,
    # offsets committed only after the table writes), and stopping lets the batch in flight
    # finish (WorkerApp)
    app = WorkerApp(
        settings.app_id,
        broker=[f"kafka://{b.strip()}" for b in settings.broker.split(",")],
        broker_credentials=settings.broker_credentials(),
        store="rocksdb://" if settings.store == "rocksdb" else "memory://",
        datadir=str(settings.table_dir),
        web_host=settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        # join the group in ~3 s instead of ~30 s (DESIGN.md section 9)
        broker_rebalance_timeout=3,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        broker_commit_interval=settings.commit_interval_s,
        # offsets are committed by the timer above only: Faust's count-based commit runs in
        # the fetch loop and waits there for the changelog to be sent (streams/faust_fixes.py),
        # which stopped fetching for ~1.5 s every 10,000 messages under a backlog
        broker_commit_every=2**31 - 1,
        stream_wait_empty=False,
        # Faust's own /table/{name}/{key}/ serves raw table values (every user's record) and
        # /router/ the cluster's URLs, with no token and no input checks; nothing uses them
        web_tables_enabled=False,
        web_router_enabled=False,
        autodiscover=False,
        origin="streams.app",
    )
    params = None  # StateParams defaults; tuned values arrive with the evaluation
    # one thread for every Qdrant call: qdrant-client's local mode is not thread-safe
    executor = ThreadPoolExecutor(1, thread_name_prefix="qdrant")

    async def run_blocking(fn: Any, *args: Any, **kwargs: Any) -> Any:
        call = partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(executor, call)

    items = ItemCache(sink, settings.item_cache_size, run_blocking)
    freshness = Freshness()
    metrics = Metrics()

    def on_flushed(points: list[UserPoint | RecordPoint], visible_at: float) -> None:
        metrics.observe_flush(freshness.observe(points, visible_at), visible_at, queue.last_flush_s)

    queue = SyncQueue(
        sink,
        executor=executor,
        on_flushed=on_flushed,
        params=params,
        max_points=settings.qdrant_write_points,
        max_writes=settings.qdrant_writes_ahead,
    )
    processor = Processor(
        encoder,
        items,
        params,
        park_max_wait_s=settings.park_max_wait_s,
        park_max_per_user=settings.park_max_per_user,
        dedupe_window=settings.dedupe_window,
        text_cache_size=settings.text_cache_size,
        text_cache_max_age_s=settings.text_cache_max_age_s,
    )
    rt = Runtime(settings, processor, sink, queue, items, freshness)
    popularity = Popularity(settings.popularity_half_life_s)
    app.runtime = rt  # type: ignore[attr-defined]

    table = app.Table(
        TABLE,
        default=None,
        key_type=bytes,  # raw bytes both ways: our own record format (streams/record.py)
        value_type=bytes,
        partitions=settings.partitions,
    )
    source = app.topic(*INPUT_TOPICS, key_serializer="raw", value_serializer="raw")
    app.topics.add(source)  # subscribed to and acknowledged by Faust as usual
    # filled by Faust's fetch loop; batches are cut by cost (a text counts as many clicks)
    app.intake = BatchBuffer(4 * settings.batch_size, cost=message_cost)
    sizer = BatchSizer(
        settings.batch_size, settings.batch_target_s, min_n=min(100, settings.batch_size)
    )
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    dlq = app.topic(DLQ_TOPIC, key_serializer="raw", value_serializer="raw", partitions=1)

    def load(user: str, context: Message) -> bytes | None:
        with partition_context(context.topic, context.partition):
            return table.get(user.encode())

    async def commit(res: BatchResult) -> None:
        for user, w in res.writes.items():
            with partition_context(w.context.topic, w.context.partition):
                table[user.encode()] = w.data
            if w.record.parked:
                p = w.record.parked[0]
                rt.parked[user] = (p.topic, p.partition)
            else:
                rt.parked.pop(user, None)
        for dl in res.dead_letters:
            await dlq.send(key=dl.key, value=dl.to_bytes())
        for item_id, ts in res.clicked:
            popularity.add(item_id, ts)
        for user in res.deleted:
            queue.mark_deleted(user)
        for user in res.updated:  # points are built when written: once per flush, not batch
            queue.mark_record(RecordPoint(user, res.writes[user].data, res.published.get(user)))

    def still_ours(batch: list[Any]) -> list[Any]:
        """The messages of partitions this worker still owns, in the current group
        generation. The others stay unacknowledged: their new owner (or this worker after
        the rebalance) reads them again from the committed offset. Call under `rt.lock`."""
        generation = app.consumer_generation_id
        revoked = rt.revoked
        keep = [
            m
            for m in batch
            if m.generation_id == generation and (m.topic, m.partition) not in revoked
        ]
        if len(keep) < len(batch):
            log.info("left %d messages of revoked partitions", len(batch) - len(keep))
        return keep

    def acknowledge(batch: list[Any]) -> None:
        """Mark messages done: Faust commits their offsets (after the table writes are
        sent, streams/faust_fixes.py). Not those of partitions being revoked: their
        offsets are no longer ours to commit."""
        consumer, revoked = app.consumer, rt.revoked
        for m in batch:
            if (m.topic, m.partition) not in revoked:
                m.ack(consumer)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        """Before partitions move to another worker: the batch in flight finishes and its
        table writes reach the changelog, and nothing more is written for them here.
        (Faust waits for neither without `stream_wait_empty`: a batch finished after the
        new owner restored the partition wrote stale records over the new owner's, and
        events were lost or applied twice.)"""
        rt.revoked.update((tp.topic, tp.partition) for tp in revoked)
        async with rt.lock:
            processor.forget_texts()
            for user, (topic, partition) in list(rt.parked.items()):
                if (topic, partition) in rt.revoked:
                    rt.parked.pop(user, None)
        await app.producer.flush()

    @app.on_partitions_assigned.connect
    async def on_assigned(app: faust.App, assigned: set[Any], **kwargs: Any) -> None:
        # messages fetched before this carry the old generation id: still_ours drops them
        rt.revoked.clear()

    @app.task
    async def consume() -> None:
        intake = app.intake
        while True:
            batch = await intake.take(sizer.size, settings.batch_within_s)
            if rt.closing:
                continue  # not acknowledged: the next run reads them again
            async with rt.lock:
                batch = still_ours(batch)
                if not batch:
                    continue
                messages = [
                    Message(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                    for m in batch
                ]
                started = time.perf_counter()
                res = await processor.process(messages, load)
                if not rt.writable:  # stopping stopped waiting for this batch
                    continue
                await commit(res)
                acknowledge(batch)
                rt.batches += 1
                took = time.perf_counter() - started
                sizer.observe(sum(map(message_cost, messages)), took)
                metrics.observe_batch([m.topic for m in messages], res, took)
                for m in messages:
                    rt.position[(m.topic, m.partition)] = (m.offset + 1, m.timestamp)

    @app.timer(interval=0.5)
    async def resume_parked() -> None:
        """Parked clicks whose item arrived (here or on another worker) or timed out."""
        await scan_table_if_reassigned()
        if not rt.parked or rt.closing:
            return
        async with rt.lock:
            if not rt.writable:
                return
            owned = assigned() - rt.revoked
            candidates: dict[str, tuple[UserRecord, Message]] = {}
            for user, (topic, partition) in list(rt.parked.items()):
                if (topic, partition) not in owned:
                    rt.parked.pop(user, None)  # rebalanced away: the new owner scans
                    continue
                raw = load(user, Message(topic, partition, -1, None, None))
                record = None if raw is None else UserRecord.from_bytes(raw, processor.params)
                if record is None or not record.parked:
                    rt.parked.pop(user, None)
                    continue
                candidates[user] = (record, Message(topic, partition, -1, None, None))
            if candidates:
                res = await processor.resume(candidates)
                await commit(res)
                metrics.observe_result(res)

    def assigned() -> set[tuple[str, int]]:
        try:
            return {(tp.topic, tp.partition) for tp in app.assignor.assigned_actives()}
        except Exception:  # before the first assignment
            return set()

    async def scan_table_if_reassigned() -> None:
        """After (re)assignment and recovery: find parked clicks and re-upsert every owned
        user, so vectors lost with a crash while Qdrant was down are written again."""
        owned = frozenset(assigned())
        if owned == rt.scanned_for or not app.tables.recovery.completed.is_set() or rt.closing:
            return
        async with rt.lock:
            if not rt.writable:
                return
            n = 0
            for key, raw in list(table.items()):
                user = key.decode()
                record = UserRecord.from_bytes(raw, processor.params)
                if record.parked:
                    p = record.parked[0]
                    rt.parked[user] = (p.topic, p.partition)
                if record.erased:
                    queue.mark_deleted(user)
                elif record.state.last_ts is not None:
                    queue.mark_record(RecordPoint(user, raw, None))
                n += 1
            rt.scanned_for = owned
            log.info(
                "table scan after assignment: %d users, %d with parked clicks", n, len(rt.parked)
            )

    @app.task
    async def run_sync_queue() -> None:
        await queue.run(rt.stop)

    @app.task
    async def flush_items() -> None:
        """New items to Qdrant (where other workers find them), retried while it is down."""
        delay = 0.05
        while not rt.stop.is_set():
            ok = await items.flush()
            delay = 0.05 if ok else min(delay * 2, 5.0)
            with suppress(TimeoutError):
                await asyncio.wait_for(rt.stop.wait(), timeout=delay)

    register_status_page(app)  # `/`: the HTML status page (streams/static/status.html)

    def consumer_lag() -> dict[tuple[str, int], tuple[int, float]]:
        """Per assigned input partition: messages and seconds behind. The high watermark
        comes with fetched messages (Tansu's ListOffsets answer is not the log end)."""
        out: dict[tuple[str, int], tuple[int, float]] = {}
        now = time.time()
        try:
            tps = [tp for tp in app.consumer.assignment() if tp.topic in INPUT_TOPICS]
        except Exception:  # not started or not assigned yet
            return out
        for tp in tps:
            try:
                end = app.consumer.highwater(tp)
            except Exception:
                continue
            pos, ts = rt.position.get((tp.topic, tp.partition), (None, None))
            if end is None or pos is None:
                continue
            behind = max(0, end - pos)
            out[(tp.topic, tp.partition)] = (behind, now - ts if behind and ts else 0.0)
        return out

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        metrics.observe_lag(consumer_lag())
        body = metrics.render(queue.pending, len(rt.parked), queue.failures)
        # as a header: aiohttp refuses a charset inside its content_type argument
        return web.bytes(body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json(status(app))

    @app.page("/users/{user_id}/vectors")
    async def user_vectors(web: Any, request: Any, user_id: str) -> Any:
        try:
            user_id = user_id_of(user_id)
        except ApiError as err:
            return web.json({"error": err.message}, status=err.status)
        raw = table.get(user_id.encode())
        record = None if raw is None else UserRecord.from_bytes(raw, processor.params)
        if record is None or record.erased or record.state.last_ts is None:
            return web.json({"error": f"unknown user {user_id!r}"}, status=404)
        st = record.state
        return web.json(
            {
                "user_id": user_id,
                "vectors": {c: _list(v) for c, v in st.named_vectors().items()},
                "counts": st.counts,
                "top_terms": [[t, w] for t, w in st.top_terms(10)],
                "first_ts": st.first_ts,
                "updated_at": st.last_ts,
                "offsets": [
                    {"topic": t, "partition": p, "offset": o} for (t, p), o in st.offsets.items()
                ],
                "parked_clicks": len(record.parked),
            }
        )

    def load_any(user: str) -> UserRecord | None:
        raw = table.get(user.encode())  # no event context: any partition's store
        return None if raw is None else UserRecord.from_bytes(raw, processor.params)

    read = ReadSide(
        sink,
        run_blocking,
        load_any,
        popularity,
        Calibration(settings.calibration_beta, settings.calibration_bias),
        settings.cold_start_min_events,
        settings.popularity_prior_weight,
        settings.prior_candidates,
    )

    def json_view(handler: Any) -> Any:
        """Run a read-side call; ApiError -> its status with {"error": message}."""

        async def view(web: Any, request: Any, **kwargs: Any) -> Any:
            try:
                doc = handler(request, **kwargs)
                if asyncio.iscoroutine(doc):
                    doc = await doc
            except ApiError as err:
                return web.json({"error": err.message}, status=err.status)
            except Exception:
                log.exception("%s %s failed", request.method, request.path)
                return web.json({"error": "internal error (logged by the worker)"}, status=500)
            return web.json(doc)

        return view

    app.page("/recommendations/{user_id}", name="recommendations")(
        json_view(lambda request, user_id: read.recommendations(user_id, dict(request.query)))
    )
    app.page("/users/{user_id}/interests", name="interests")(
        json_view(lambda request, user_id: read.interests(user_id))
    )
    app.page("/users/{user_id}/similar", name="similar")(
        json_view(lambda request, user_id: read.similar(user_id, dict(request.query)))
    )

    deletes = app.topic("users.delete", key_serializer="raw", value_serializer="raw")

    class DeleteUser(faust.web.View):
        """DELETE /users/{user_id}: queue the user's erasure (a `users.delete` event, so it
        is applied in order with their other events). Needs `Authorization: Bearer
        <INTEREST_API_TOKEN>`; without a configured token the endpoint is disabled."""

        async def delete(self, request: Any, user_id: str) -> Any:
            token = settings.api_token
            if not token:
                return self.json(
                    {"error": "mutating endpoints are disabled: set INTEREST_API_TOKEN"},
                    status=403,
                )
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return self.json({"error": "missing or wrong bearer token"}, status=401)
            try:
                user = user_id_of(user_id)
            except ApiError as err:
                return self.json({"error": err.message}, status=err.status)
            body = json.dumps({"user_id": user}).encode()
            await deletes.send(key=user.encode(), value=body)
            return self.json({"user_id": user, "status": "deletion queued"}, status=202)

    app.page("/users/{user_id}", name="delete_user")(DeleteUser)

    @app.on_before_shutdown.connect
    async def _stop(app: faust.App, **kwargs: Any) -> None:
        await items.flush()
        await queue.flush(timeout=5.0)
        rt.stop.set()

    return app


def _list(v: Any) -> list[float] | None:
    return None if v is None else [round(float(x), 7) for x in v]


def status(app: faust.App) -> dict[str, Any]:
    rt: Runtime = app.runtime  # type: ignore[attr-defined]
    totals = dict(rt.processor.totals)
    return {
        "status": "ok",
        "uptime_s": round(time.time() - rt.started_at, 3),
        "batches": rt.batches,
        "totals": totals,
        "texts": dict(rt.processor.text_totals),  # user texts encoded vs found in the cache
        "parked_users": len(rt.parked),
        "qdrant": {
            "pending": rt.queue.pending,
            "upserted": rt.queue.upserted,
            "deleted": rt.queue.deleted,
            "failures": rt.queue.failures,
        },
        "freshness": rt.freshness.summary(),
        "recovered": app.tables.recovery.completed.is_set(),
    }
