"""The per-event baseline for bench/pipeline.py: a plain Faust agent, the common way.

    .venv/bin/python bench/baseline_faust.py --broker HOST:PORT --data-dir DIR \
        --web-port PORT [--partitions 4] [--store rocksdb|memory]

What most people write first, with the same parts as interest-stream where the parts are
not the point (validation `streams.events.parse_event`, the encoder, `TextVectors.of`,
event weights via `streams.profile.encoded_event`, `streams.sink.QdrantSink` on
qdrant-client local mode), and none of its architecture:

- `async for value in stream:` one message at a time over the three user topics;
- a read-modify-write of a Faust Table per message: the user's state is a JSON dict
  (Faust's default value serializer) holding the decayed sums S (4 x 384 floats, as
  lists), the weights W, counts, decayed top terms and the last seen items; each event
  is decoded into numpy, decayed to the newest event time, added, and written back (the
  write also produces a changelog record, as every Faust table write does);
- one `encoder.encode([text])` call per search/comment event (no batching, no cache);
- one synchronous `QdrantSink.upsert_users([point])` per event (five named vectors);
- items (a second agent on `items`): one encode and one Qdrant upsert per item, kept in a
  process-local dict; a click on an item not in the dict looks it up in Qdrant `items`
  (the same fallback our worker's item cache has), e.g. after a restart.
No micro-batches, no dedupe of repeated event ids or offsets, no coalescing of writes.

`/healthz` answers in the shape the benchmark polls from our worker: totals (consumed,
applied, items, dead_lettered), qdrant (pending is always 0: writes are synchronous,
upserted), and freshness: Kafka message timestamp -> upsert returned, for *every* event
(reservoir of the last 10,000), plus `recovered`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

RESERVOIR = 10_000
MAX_TERMS = 32
MAX_ITEMS = 50
log = logging.getLogger("baseline")


class Freshness:
    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=RESERVOIR)
        self.count = 0

    def observe(self, published_at: float | None, visible_at: float) -> None:
        if published_at is not None:
            self.recent.append(visible_at - published_at)
            self.count += 1

    def summary(self) -> dict[str, Any]:
        if not self.recent:
            return {"count": self.count, "p50_s": None, "p99_s": None}
        q = np.quantile(np.fromiter(self.recent, float), [0.5, 0.99])
        return {"count": self.count, "p50_s": round(q[0], 4), "p99_s": round(q[1], 4)}


def new_state(dim: int) -> dict[str, Any]:
    return {
        "t": None,  # time the sums are decayed to (the newest event time seen)
        "S": [[0.0] * dim for _ in range(4)],  # word, sentence, document, negative
        "W": [0.0] * 4,
        "counts": {"click": 0, "search": 0, "comment": 0, "negative": 0},
        "terms": {},
        "items": [],
        "first_ts": None,
        "last_ts": None,
    }


def update(state: dict[str, Any], ev: Any, params: Any) -> dict[str, Any]:
    """One event into a JSON state, per event with numpy (the same decayed-sum math as
    streams/state.py, anchored at the newest event time instead of a reference time)."""
    w = ev.weight(params)
    rates = params.decay_rates
    S = np.asarray(state["S"], dtype=np.float64)
    W = np.asarray(state["W"], dtype=np.float64)
    terms: dict[str, float] = state["terms"]
    t = state["t"]
    ts = float(ev.ts)
    if t is None:
        t = ts
    elif ts > t:  # decay everything to the new event time
        f = np.exp(-rates * (ts - t))
        S *= f[:, None]
        W *= f
        terms = {k: v * float(f[0]) for k, v in terms.items()}
        t = ts
    f = np.exp(-rates * (t - ts))  # an older event counts less
    state["counts"][ev.kind] += 1
    if w < 0:
        state["counts"]["negative"] += 1
    state["first_ts"] = ts if state["first_ts"] is None else min(state["first_ts"], ts)
    state["last_ts"] = ts if state["last_ts"] is None else max(state["last_ts"], ts)
    if ev.item_id is not None:
        items = [i for i in state["items"] if i != ev.item_id] + [ev.item_id]
        state["items"] = items[-MAX_ITEMS:]
    text = ev.text
    if text is not None and w != 0:
        if w > 0:
            if text.n_words:
                c = w * f[0] / text.n_words
                S[0] += c * text.word_sum
                W[0] += w * f[0]
                for term, n in text.terms:
                    terms[term] = terms.get(term, 0.0) + c * n
                if len(terms) > MAX_TERMS:
                    terms = dict(sorted(terms.items(), key=lambda kv: -kv[1])[:MAX_TERMS])
            if text.n_sentences:
                S[1] += (w * f[1] / text.n_sentences) * text.sentence_sum
                W[1] += w * f[1]
            if text.has_document:
                S[2] += (w * f[2]) * text.document
                W[2] += w * f[2]
        elif text.has_document:
            S[3] += (-w * f[3]) * text.document
            W[3] += -w * f[3]
    state["t"] = t
    state["S"] = S
    state["W"] = W
    state["terms"] = terms
    return state


def to_json(state: dict[str, Any]) -> dict[str, Any]:
    """The JSON form (what Faust's default json serializer then writes): lists of floats."""
    return {**state, "S": np.asarray(state["S"]).tolist(), "W": np.asarray(state["W"]).tolist()}


_HEAD = 4 * 4  # W: 4 float32


def to_binary(state: dict[str, Any]) -> bytes:
    """A compact form: W and S as float32 bytes, the rest as a small JSON tail."""
    rest = {k: v for k, v in state.items() if k not in ("S", "W")}
    return (
        np.asarray(state["W"], dtype=np.float32).tobytes()
        + np.asarray(state["S"], dtype=np.float32).tobytes()
        + json.dumps(rest, separators=(",", ":")).encode()
    )


def from_binary(raw: bytes, dim: int) -> dict[str, Any]:
    n = 4 * 4 * dim
    state = json.loads(raw[_HEAD + n :])
    state["W"] = np.frombuffer(raw[:_HEAD], dtype=np.float32).astype(np.float64)
    state["S"] = np.frombuffer(raw[_HEAD : _HEAD + n], np.float32).astype(np.float64)
    state["S"] = state["S"].reshape(4, dim)
    return state


def vectors(state: dict[str, Any], params: Any) -> dict[str, np.ndarray | None]:
    from streams.fusion import fuse

    S = np.asarray(state["S"], dtype=np.float64)
    norms = np.linalg.norm(S, axis=1)
    present = (np.asarray(state["W"]) > 0) & (norms > 0)
    units = S / np.where(norms > 0, norms, 1.0)[:, None]
    out: dict[str, np.ndarray | None] = {
        name: units[g] if present[g] else None
        for g, name in enumerate(("word", "sentence", "document", "negative"))
    }
    out["fused"] = fuse(units[:3], present[:3], params.alphas)
    return out


def create_app(args: argparse.Namespace) -> Any:
    import faust

    from encoders import Encoder
    from streams.embedded import DLQ_TOPIC
    from streams.events import TOPIC_TYPES, InvalidEvent, ItemEvent, SearchEvent, parse_event
    from streams.profile import encoded_event
    from streams.sink import (
        ItemPoint,
        QdrantSink,
        UserPoint,
        text_vectors_from_payload,
        text_vectors_to_payload,
    )
    from streams.state import StateParams, TextVectors

    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    encoder = Encoder("e5-small", device="cpu")
    sink = QdrantSink(encoder.dim, path=data / "qdrant")
    sink.ensure_collections()
    params = StateParams()
    app = faust.App(
        "baseline-faust",
        broker=f"kafka://{args.broker}",
        store="rocksdb://" if args.store == "rocksdb" else "memory://",
        datadir=str(data / "tables"),
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        web_port=args.web_port,
        topic_partitions=args.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=3,
        broker_session_timeout=6,
        broker_heartbeat_interval=1,
        stream_wait_empty=False,
        autodiscover=False,
        origin="baseline_faust",
    )
    if args.state == "json":  # Faust's default value serializer (json) on a dict
        users = app.Table("baseline_users", default=None, partitions=args.partitions)
        load, dump = (lambda v: v), to_json
    else:
        users = app.Table(
            "baseline_users", default=None, partitions=args.partitions, value_type=bytes
        )
        load, dump = (lambda v: None if v is None else from_binary(v, encoder.dim)), to_binary
    events = app.topic(
        "events.click",
        "events.search",
        "events.comment",
        key_serializer="raw",
        value_serializer="raw",
    )
    items_topic = app.topic("items", key_serializer="raw", value_serializer="raw")
    dlq = app.topic(DLQ_TOPIC, key_serializer="raw", value_serializer="raw", partitions=1)
    totals: Counter[str] = Counter()
    freshness = Freshness()
    item_vectors: dict[str, TextVectors] = {}
    upserted = [0]

    async def dead_letter(raw: bytes | None, reason: str) -> None:
        totals["dead_lettered"] += 1
        doc = {"value": (raw or b"").decode("utf-8", "replace"), "reason": reason}
        await dlq.send(value=json.dumps(doc).encode())

    def item_text(item_id: str) -> TextVectors | None:
        tv = item_vectors.get(item_id)
        if tv is None:  # not seen by this process (a restart): Qdrant `items` has it
            payload = sink.get_items([item_id]).get(item_id)
            if payload is not None:
                tv = item_vectors[item_id] = text_vectors_from_payload(
                    payload["text"], dim=encoder.dim
                )
        return tv

    if args.mode == "noop-event":  # the Faust delivery path alone, one message at a time

        @app.agent(events)
        async def noop_events(stream: Any) -> None:
            async for _ in stream:
                totals["consumed"] += 1

    elif args.mode == "noop-batch":  # ... and in micro-batches, as streams/app.py takes them

        @app.agent(events)
        async def noop_batches(stream: Any) -> None:
            async for batch in stream.take_events(2000, within=0.05):
                totals["consumed"] += len(batch)
                totals["batches"] += 1

    else:

        @app.agent(events)
        async def take_events(stream: Any) -> None:
            async for value in stream:
                message = stream.current_event.message
                try:
                    e = parse_event(value, TOPIC_TYPES[message.topic])
                except InvalidEvent as err:
                    await dead_letter(value, err.reason)
                    totals["consumed"] += 1
                    continue
                if e.type == "click":
                    text = item_text(e.item_id)
                    if text is None and e.text:
                        text = TextVectors.of(encoder.encode([e.text], kind="passage")[0])
                else:
                    query = e.query if isinstance(e, SearchEvent) else e.text
                    text = TextVectors.of(encoder.encode([query], kind="query")[0])
                key = e.user_id
                state = load(users.get(key))  # read ...
                state = update(state or new_state(encoder.dim), encoded_event(e, text), params)
                users[key] = dump(state)  # ... modify, write (and a changelog record)
                point = UserPoint(
                    user_id=key,
                    vectors=vectors(state, params),
                    payload={
                        "user_id": key,
                        "top_terms": sorted(state["terms"].items(), key=lambda kv: -kv[1])[:10],
                        "counts": state["counts"],
                        "seen_items": state["items"],
                        "last_ts": state["last_ts"],
                        "published_at": message.timestamp,
                        "updated_at": time.time(),
                    },
                )
                sink.upsert_users([point])  # one synchronous upsert per event
                upserted[0] += 1
                freshness.observe(message.timestamp, time.time())
                totals["applied"] += 1
                totals["consumed"] += 1

    @app.agent(items_topic)
    async def take_items(stream: Any) -> None:
        async for value in stream:
            try:
                item = parse_event(value, "item")
            except InvalidEvent as err:
                await dead_letter(value, err.reason)
                totals["consumed"] += 1
                continue
            assert isinstance(item, ItemEvent)
            tv = TextVectors.of(encoder.encode([item.text()], kind="passage")[0])
            item_vectors[item.item_id] = tv
            sink.upsert_items(
                [
                    ItemPoint(
                        item.item_id,
                        tv.document,
                        {
                            "title": item.title,
                            "tags": list(item.tags),
                            "text": text_vectors_to_payload(tv),
                        },
                    )
                ]
            )
            totals["items"] += 1
            totals["consumed"] += 1

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json(
            {
                "status": "ok",
                "totals": dict(totals),
                "batches": totals["batches"] or totals["consumed"],
                "parked_users": 0,
                "qdrant": {"pending": 0, "upserted": upserted[0]},
                "freshness": freshness.summary(),
                "recovered": app.tables.recovery.completed.is_set(),
            }
        )

    app.sink_for_close = sink  # type: ignore[attr-defined]
    return app


async def plain_consumer(args: argparse.Namespace) -> int:
    """The floor under any Kafka consumer in Python: aiokafka getmany(), count, nothing else."""
    import asyncio
    import signal

    from aiohttp import web
    from aiokafka import AIOKafkaConsumer

    totals: Counter[str] = Counter()
    consumer = AIOKafkaConsumer(
        "events.click",
        "events.search",
        "events.comment",
        bootstrap_servers=args.broker,
        group_id="baseline-aiokafka",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        rebalance_timeout_ms=3000,
    )

    async def healthz(request: Any) -> Any:
        return web.json_response(
            {
                "status": "ok",
                "totals": dict(totals),
                "batches": totals["batches"],
                "parked_users": 0,
                "qdrant": {"pending": 0, "upserted": 0},
                "freshness": {"count": 0, "p50_s": None, "p99_s": None},
                "recovered": bool(consumer.assignment()),
            }
        )

    web_app = web.Application()
    web_app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(web_app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.web_port).start()
    await consumer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        while not stop.is_set():
            got = await consumer.getmany(timeout_ms=100, max_records=5000)
            n = sum(len(v) for v in got.values())
            if n:
                totals["consumed"] += n
                totals["batches"] += 1
    finally:
        await consumer.stop()
        await runner.cleanup()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("worker", nargs="?", help="ignored (faust style)")
    ap.add_argument("--broker", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--web-port", type=int, required=True)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--store", choices=["rocksdb", "memory"], default="rocksdb")
    ap.add_argument(
        "--state",
        choices=["json", "binary"],
        default="json",
        help="user state as JSON lists (default) or float32 bytes + JSON tail",
    )
    ap.add_argument(
        "--mode",
        choices=["rmw", "noop-event", "noop-batch", "aiokafka"],
        default="rmw",
        help="rmw: the baseline; noop-*: only count messages (Faust's own cost); aiokafka: "
        "only count messages with a plain aiokafka consumer (no Faust)",
    )
    args = ap.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.mode == "aiokafka":
        import asyncio

        return asyncio.run(plain_consumer(args))
    import faust

    app = create_app(args)
    print(f"baseline worker web server on http://127.0.0.1:{args.web_port}", flush=True)
    worker = faust.Worker(app, loglevel="info", quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as stop:
        return int(stop.code or 0) if isinstance(stop.code, int | None) else 1
    finally:
        app.sink_for_close.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
