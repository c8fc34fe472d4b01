"""The worker's parts in isolation, on bench/pipeline.py's click workload: what each costs
per event and per changed user, without Kafka, Faust or threads in the way.

    .venv/bin/python bench/pipeline_parts.py [--quick]

1. validation: `parse_event` per message;
2. `Processor.process` (validate, dedupe, item lookup in a warm cache, apply_batch, record
   bytes) on micro-batches of several sizes, plus the table write, with the table as a
   dict of record bytes ("events/s": our stream-side code alone);
3. per Qdrant point, what the worker does when it writes a changed user (once per flush,
   however many batches changed the user): `user_point` and the check `_user_parts`;
4. Qdrant writes of the resulting user points (5 named 384-d vectors + payload) with
   qdrant-client local mode, on disk (WAL, as `QdrantSink.ensure_collections` sets it) and
   in memory, in upserts of 1, 100 and 1,000 points; our own share (`_user_struct`:
   lists, UUID5, checks, pydantic) is timed apart.
Item texts are random unit vectors with the items' title words as terms (the state math
does not care what the numbers are). Prints per-event / per-point costs and a CPU budget
for 10,000 events/s; writes bench/out/pipeline_parts.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from machine import machine_info
from pipeline import Workload, window_stats

from streams.events import parse_event
from streams.sink import QdrantSink, _user_parts, _user_struct
from streams.state import StateParams, TextVectors, summarize
from streams.user_points import user_point
from streams.worker import Message, Processor

DIM = 384
OUT = Path(__file__).resolve().parent / "out" / "pipeline_parts.json"


class NoEncoder:
    dim = DIM

    def encode(self, texts: Any, kind: str = "passage") -> list[Any]:
        raise AssertionError("click-only workload: nothing to encode")


class WarmItems:
    """An item store whose cache holds every item (the steady state of a running worker)."""

    def __init__(self, vectors: dict[str, TextVectors]) -> None:
        self.vectors = vectors

    async def get(self, item_ids: Any) -> dict[str, TextVectors]:
        return {i: self.vectors[i] for i in item_ids if i in self.vectors}

    def is_current(self, item_id: str, text: str) -> bool:
        return True

    def put(self, item: Any, vectors: TextVectors) -> None:
        pass


def item_vectors(items: list[dict[str, Any]], seed: int) -> dict[str, TextVectors]:
    rng = np.random.default_rng(seed)
    out = {}
    for d in items:
        words = [w for w in d["title"].split() if w.isalpha()] or ["item"]
        wv = rng.standard_normal((len(words), DIM)).astype(np.float32)
        sv = rng.standard_normal((1, DIM)).astype(np.float32)
        out[d["item_id"]] = summarize(words, wv, sv, sv[0])
    return out


def messages(events: list[dict[str, Any]]) -> list[Message]:
    out = []
    offsets = [0, 0, 0, 0]
    for e in events:
        body = {k: v for k, v in e.items() if k != "type"}
        key = e["user_id"].encode()
        p = zlib.crc32(key) % 4
        out.append(
            Message(
                f"events.{e['type']}",
                p,
                offsets[p],
                key,
                json.dumps(body, separators=(",", ":")).encode(),
                time.time(),
            )
        )
        offsets[p] += 1
    return out


def per(seconds: float, n: int) -> float:
    return seconds / max(n, 1) * 1e6


def run_batches(msgs: list[Message], size: int, items: WarmItems) -> dict[str, Any]:
    proc = Processor(NoEncoder(), items, StateParams())
    table: dict[str, bytes] = {}
    t_proc = t_bytes = t_point = t_check = 0.0
    users = 0
    points = []

    def load(user: str, context: Message) -> bytes | None:
        return table.get(user)

    for a in range(0, len(msgs), size):
        batch = msgs[a : a + size]
        t = time.perf_counter()
        res = _run(proc, batch, load)
        t_proc += time.perf_counter() - t
        t = time.perf_counter()
        for user, w in res.writes.items():  # as streams/app.py commit() writes the table
            data = getattr(w, "data", None)  # bytes the processor made already, if it does
            table[user] = data if data else w.record.to_bytes()
        t_bytes += time.perf_counter() - t
        t = time.perf_counter()
        pts = [user_point(u, res.writes[u].record.state, res.published.get(u)) for u in res.updated]
        t_point += time.perf_counter() - t
        t = time.perf_counter()
        for p in pts:
            _user_parts(p, DIM)
        t_check += time.perf_counter() - t
        users += len(res.updated)
        points = pts if len(pts) > len(points) else points
    n = len(msgs)
    return {
        "batch_size": size,
        "events": n,
        "changed_users": users,
        "users_per_event": users / n,
        "process_us_per_event": per(t_proc + t_bytes, n),
        "user_point_us_per_point": per(t_point, users),
        "point_check_us_per_point": per(t_check, users),
        "events_per_s": n / (t_proc + t_bytes),
        "_points": points,
        "_table": table,
    }


_loop = asyncio.new_event_loop()


def _run(proc: Processor, batch: list[Message], load: Any) -> Any:
    return _loop.run_until_complete(proc.process(batch, load))


def qdrant_costs(points: list[Any], sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    out = []
    for where in ("disk", "memory"):
        for size in sizes:
            best = best_struct = float("inf")
            for _ in range(repeat):
                with tempfile.TemporaryDirectory() as d:
                    sink = (
                        QdrantSink(DIM, path=Path(d) / "q")
                        if where == "disk"
                        else QdrantSink.memory(DIM)
                    )
                    sink.ensure_collections()
                    sink.upsert_users(points[:size])  # first writes create the storage
                    work = points[: max(size, min(len(points), 1000))]
                    t = time.perf_counter()
                    for a in range(0, len(work), size):
                        sink.upsert_users(work[a : a + size])
                    best = min(best, per(time.perf_counter() - t, len(work)))
                    t = time.perf_counter()
                    for p in work:
                        _user_struct(p, DIM)
                    best_struct = min(best_struct, per(time.perf_counter() - t, len(work)))
                    sink.close()
            out.append(
                {
                    "storage": where,
                    "points_per_upsert": size,
                    "us_per_point": best,
                    "our_struct_us_per_point": best_struct,
                    "points_per_s": 1e6 / best,
                }
            )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--user-zipf", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    n = args.events or (10_000 if args.quick else 40_000)
    wl = Workload(args.seed, args.users, args.user_zipf, 1.0)
    events = wl.events(n, "c")
    msgs = messages(events)
    items = WarmItems(item_vectors(wl.items, args.seed))
    info = machine_info()
    print(
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['platform']}, "
        f"Python {info['python']}"
    )
    print("Command: " + " ".join([".venv/bin/python", "bench/pipeline_parts.py", *sys.argv[1:]]))

    t = time.perf_counter()
    for m in msgs[:5000]:
        parse_event(m.value, "click")
    validate_us = per(time.perf_counter() - t, min(len(msgs), 5000))

    sizes = [100, 500, 2000] if args.quick else [100, 500, 2000, 10_000]
    batches = [run_batches(msgs, s, items) for s in sizes]
    points = max((b["_points"] for b in batches), key=len)
    q = qdrant_costs(points, [1, 100, 1000], repeat=1 if args.quick else 2)
    sizes_b = [len(v) for v in batches[-1]["_table"].values()]
    windows = {w: window_stats(events, w)["distinct_users"] for w in (100, 500, 2000, 10_000)}

    print(
        f"\n{n:,} click events over {args.users:,} users (Zipf {args.user_zipf}); record bytes "
        f"mean {np.mean(sizes_b):,.0f}, max {max(sizes_b):,}"
    )
    print(f"validation (parse_event): {validate_us:.1f} us/event")
    print(
        f"\n{'batch':>6} | {'changed users/event':>19} | {'process + table us/event':>24} | "
        f"{'events/s':>9}"
    )
    for b in batches:
        print(
            f"{b['batch_size']:>6,} | {b['users_per_event']:>19.2f} | "
            f"{b['process_us_per_event']:>24.1f} | {b['events_per_s']:>9,.0f}"
        )
    b0 = batches[-1]
    print(
        f"per Qdrant point written: user_point {b0['user_point_us_per_point']:.0f} us + check "
        f"{b0['point_check_us_per_point']:.0f} us"
    )
    print(
        f"\n{'qdrant':>6} | {'points/upsert':>13} | {'us/point':>9} | {'ours of it':>10} | "
        f"{'points/s':>9}"
    )
    for r in q:
        print(
            f"{r['storage']:>6} | {r['points_per_upsert']:>13,} | {r['us_per_point']:>9.0f} | "
            f"{r['our_struct_us_per_point']:>10.0f} | {r['points_per_s']:>9,.0f}"
        )
    print(
        "\ndistinct users per window of consecutive events: "
        + ", ".join(f"{w:,}: {u:,.0f}" for w, u in windows.items())
    )

    # CPU budget at 10,000 events/s with 2,000-event batches (5 per second)
    b2k = next(b for b in batches if b["batch_size"] == 2000)
    disk = next(r for r in q if r["storage"] == "disk" and r["points_per_upsert"] == 1000)
    per_point = (
        b2k["user_point_us_per_point"] + b2k["point_check_us_per_point"] + disk["us_per_point"]
    )
    budget = {
        "events_per_s": 10_000,
        "stream_s": b2k["process_us_per_event"] * 1e4 / 1e6,
        "per_point_us": per_point,
        "points_s_each_batch": per_point * 5 * windows[2000] / 1e6,
        "points_s_each_user_once_per_second": per_point * windows[10_000] / 1e6,
    }
    print(
        f"\nCPU seconds per second at 10,000 click events/s (2,000-event batches): stream side "
        f"{budget['stream_s']:.2f} s; Qdrant points at {per_point:.0f} us each (build + check +"
        f" local-mode upsert on disk): {budget['points_s_each_batch']:.2f} s if every batch's "
        f"changed users are written ({5 * windows[2000]:,.0f}/s), "
        f"{budget['points_s_each_user_once_per_second']:.2f} s if each changed user is written "
        f"once per second ({windows[10_000]:,.0f}/s)"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "machine": info,
                "events": n,
                "validate_us_per_event": validate_us,
                "batches": [{k: v for k, v in b.items() if not k.startswith("_")} for b in batches],
                "qdrant": q,
                "distinct_users_per_window": windows,
                "budget_at_10k": budget,
            },
            indent=1,
        )
    )
    print(f"\nwrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
