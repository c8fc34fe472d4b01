"""Outages under load: time to drain after a Qdrant outage, and broker reconnect time.

    .venv/bin/python bench/outage.py [--quick] [--rate 1000] [--outage 30] [--phases qdrant broker]

qdrant   One worker (`interest-stream up`: RocksDB table, Qdrant local mode on disk, 4
         partitions per topic) on an embedded Tansu broker, fed bench/pipeline.py's seeded
         workload (MovieLens-100k items, Zipf users, --text-share text events) paced at --rate
         for --warm + --outage seconds. Two runs side by side on fresh brokers and data
         directories: "no outage", and "outage", where Qdrant is unavailable for the last
         --outage seconds of publishing: its local store is locked by this process
         (streams.supervisor.QdrantStoreLock, an exclusive sqlite lock on every collection;
         the worker's writes fail with "database is locked" after sqlite's 5 s busy timeout,
         reads go on). Publishing ends when the lock is released. Drain = end of
         publishing -> every event consumed and every changed user's vectors in Qdrant (the
         worker's /healthz: nothing pending, nothing parked); in the "no outage" run the
         same moment is the end of publishing.
broker   Tansu with its log in S3-compatible storage (moto_server from the dev extra). A
         backlog of --backlog events is published; once the worker has started on it the
         broker is killed (SIGKILL, or SIGTERM with --broker-signal stop), restarted after
         --broker-outage seconds on the same port and storage, and another --backlog
         events are published to it. Meanwhile the worker goes on with the part of the
         backlog it had prefetched. Reconnect = restart -> the group's committed offsets
         move again (the worker talks to the restarted broker's group coordinator);
         catch-up = restart -> everything consumed and in Qdrant.

Prints a table, the machine line and the command; writes bench/out/outage.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info
from pipeline import Workload, health, publish, write_jsonl

from streams.embedded import EmbeddedBroker, ensure_topics
from streams.supervisor import QdrantStoreLock, S3ServerProcess, WorkerProcess

OUT = Path(__file__).resolve().parent / "out" / "outage.json"
PARTITIONS = 4
POLL_S = 0.25


class Timeline:
    """/healthz polled while a run goes on: (seconds, consumed, applied, pending, upserted,
    failures) rows, and helpers to read figures off them."""

    def __init__(self, worker: WorkerProcess, start: float) -> None:
        self.worker, self.start, self.rows = worker, start, []

    def poll(self) -> dict[str, Any]:
        h = health(self.worker)
        t, q = h["totals"], h["qdrant"]
        now = time.monotonic() - self.start
        row = (now, t.get("consumed", 0), t.get("applied", 0), q["pending"], q["upserted"])
        self.rows.append((*row, q["failures"], h["parked_users"]))
        return h

    def until(self, t: float) -> None:
        while time.monotonic() - self.start < t:
            self.poll()
            time.sleep(POLL_S)

    def at(self, t: float) -> tuple:
        return next((r for r in self.rows if r[0] >= t), self.rows[-1])

    def rate(self, col: int, t0: float, t1: float) -> float:
        a, b = self.at(t0), self.at(t1)
        return (b[col] - a[col]) / max(b[0] - a[0], 1e-9)


def committed(bootstrap: str) -> int:
    """The group's committed offsets, summed over the input partitions."""
    from streams.embedded import INPUT_TOPICS
    from streams.lag_exporter import OffsetReader

    async def read() -> int:
        reader = await OffsetReader(bootstrap, "interest-stream", INPUT_TOPICS).start()
        try:
            return sum(o.committed or 0 for o in await reader.read())
        finally:
            await reader.close()

    return asyncio.run(read())


def start_worker(bootstrap: str, data: Path, items: Path, n_items: int) -> WorkerProcess:
    worker = WorkerProcess(bootstrap, data, partitions=PARTITIONS).start(timeout=300)
    publish(items, bootstrap)
    worker.wait_idle(consumed=n_items, timeout=900)  # encodes every item once
    return worker


def drained(h: dict[str, Any], total: int) -> bool:
    return (
        h["totals"].get("consumed", 0) >= total
        and h["qdrant"]["pending"] == 0
        and h["parked_users"] == 0
    )


def qdrant_run(args: argparse.Namespace, d: Path, files: dict[str, Any], outage: bool) -> dict:
    d.mkdir(parents=True)
    with EmbeddedBroker(log_path=d / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, PARTITIONS)
        worker = start_worker(broker.bootstrap, d / "data", files["items"], files["n_items"])
        total = files["n_items"] + files["n_events"]
        try:
            sent: dict[str, float] = {}
            pub = threading.Thread(
                target=lambda: sent.update(publish(files["events"], broker.bootstrap, args.rate))
            )
            start = time.monotonic()
            pub.start()
            tl = Timeline(worker, start)
            tl.until(args.warm)
            lock = QdrantStoreLock(worker.data_dir / "qdrant").acquire() if outage else None
            t_lock = time.monotonic() - start
            try:
                while pub.is_alive():
                    tl.poll()
                    time.sleep(POLL_S)
            finally:
                if lock is not None:
                    lock.release()
            t_end = time.monotonic() - start  # publishing ended; Qdrant is back
            at_end = tl.poll()
            upserted = at_end["qdrant"]["upserted"]
            t_write = None
            while not drained(h := tl.poll(), total):
                if t_write is None and h["qdrant"]["upserted"] > upserted:
                    t_write = tl.rows[-1][0]
                if tl.rows[-1][0] - t_end > args.timeout:
                    raise TimeoutError(f"not drained after {args.timeout:.0f}s: {h}")
                time.sleep(POLL_S)
            t_done = tl.rows[-1][0]
            t_write = t_done if t_write is None else t_write
        finally:
            worker.stop()
    window = (t_lock, t_end)
    return {
        "outage": outage,
        "published": sent,
        "window_s": t_end - t_lock,
        "consumed_per_s_in_window": tl.rate(1, *window),
        "applied_per_s_in_window": tl.rate(2, *window),
        "upserted_per_s_in_window": tl.rate(4, *window),
        "failed_writes": at_end["qdrant"]["failures"],
        "pending_users_at_end": at_end["qdrant"]["pending"],
        "lag_at_end": total - at_end["totals"].get("consumed", 0),
        "first_write_after_end_s": t_write - t_end,
        "drain_s": t_done - t_end,
        "totals": h["totals"],
        "timeline": tl.rows,
    }


def broker_run(args: argparse.Namespace, d: Path, files: dict[str, Any]) -> dict[str, Any]:
    d.mkdir(parents=True)
    s3 = S3ServerProcess(d / "moto.log").start()
    broker = EmbeddedBroker(
        log_path=d / "tansu.log", storage=s3.create_bucket("tansu"), env=s3.client_env()
    )
    worker = None
    try:
        broker.start()
        ensure_topics(broker.bootstrap, PARTITIONS)
        worker = start_worker(broker.bootstrap, d / "data", files["items"], files["n_items"])
        first, rest = files["backlogs"]
        publish(first, broker.bootstrap)
        before = files["n_items"] + files["n_backlog"]
        tl = Timeline(worker, time.monotonic())
        while tl.poll()["totals"].get("consumed", 0) <= files["n_items"]:
            time.sleep(0.05)
        at_stop = tl.rows[-1][1] - files["n_items"]
        committed_at_stop = committed(broker.bootstrap)
        broker.stop() if args.broker_signal == "stop" else broker.kill()
        t_stop = time.monotonic()
        tl.until(t_stop - tl.start + args.broker_outage)
        broker.start()
        t_restart = time.monotonic()
        while committed(broker.bootstrap) <= committed_at_stop:
            if time.monotonic() - t_restart > args.timeout:
                raise TimeoutError(f"no commit after {args.timeout:.0f}s: {tl.poll()}")
            time.sleep(0.1)
        t_commit = time.monotonic()
        publish(rest, broker.bootstrap)
        total = before + files["n_backlog"]
        t_back = None
        while not drained(h := tl.poll(), total):
            if t_back is None and h["totals"].get("consumed", 0) > before:
                t_back = time.monotonic()
            if time.monotonic() - t_restart > args.timeout:
                raise TimeoutError(f"not caught up after {args.timeout:.0f}s: {h}")
            time.sleep(0.05)
        t_done = time.monotonic()
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
        s3.stop()
    return {
        "signal": args.broker_signal,
        "down_s": t_restart - t_stop,
        "backlog_consumed_at_stop": at_stop,
        "reconnect_s": t_commit - t_restart,
        "consumed_new_s": (t_back or t_done) - t_restart,
        "caught_up_s": t_done - t_restart,
        "totals": h["totals"],
        "timeline": tl.rows,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, ~3 minutes")
    ap.add_argument("--phases", nargs="+", choices=["qdrant", "broker"], default=None)
    ap.add_argument("--rate", type=float, default=1000.0, help="offered events/s")
    ap.add_argument("--outage", type=float, default=None, help="Qdrant outage seconds (30)")
    ap.add_argument("--warm", type=float, default=None, help="paced seconds before it (10)")
    ap.add_argument("--text-share", type=float, default=0.0, help="searches + comments")
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--items", type=int, default=None, help="first N MovieLens items (all)")
    ap.add_argument("--backlog", type=int, default=None, help="broker phase (5,000)")
    ap.add_argument("--broker-outage", type=float, default=10.0)
    ap.add_argument("--broker-signal", choices=["kill", "stop"], default="kill")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    q = args.quick
    args.phases = args.phases or ["qdrant", "broker"]
    args.outage = args.outage or (10.0 if q else 30.0)
    args.warm = args.warm if args.warm is not None else (5.0 if q else 10.0)
    args.items = args.items if args.items is not None else (300 if q else 0)
    args.backlog = args.backlog or (3_000 if q else 5_000)

    wl = Workload(args.seed, args.users, 0.8, 1.0, n_items=args.items)
    result: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp:
        d = Path(tmp)
        items = write_jsonl(d / "items.jsonl", wl.items)
        n = round(args.rate * (args.warm + args.outage))
        files: dict[str, Any] = {"items": items, "n_items": len(wl.items)}
        if "qdrant" in args.phases:
            events = wl.events(n, "q", text_share=args.text_share)
            files |= {"events": write_jsonl(d / "events.jsonl", events), "n_events": n}
            result["qdrant"] = [
                qdrant_run(args, d / label, files, outage)
                for label, outage in (("no-outage", False), ("outage", True))
            ]
        if "broker" in args.phases:
            b = args.backlog
            backlogs = [
                write_jsonl(d / f"backlog{i}.jsonl", wl.events(b, f"b{i}-")) for i in (1, 2)
            ]
            files |= {"backlogs": backlogs, "n_backlog": b}
            result["broker"] = broker_run(args, d / "broker", files)
    result["machine"] = machine_info()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    report(result, args)
    return 0


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    if "qdrant" in result:
        print(
            f"\nQdrant outage: {args.outage:.0f} s at the end of {args.warm + args.outage:.0f} s "
            f"of events offered at {args.rate:,.0f}/s ({args.users:,} users, text share "
            f"{args.text_share:.0%})"
        )
        print(
            "| run | events | consumed/s | applied/s | points/s | failed writes | pending "
            "users | lag | first write | drain |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in result["qdrant"]:
            print(
                f"| {'outage' if r['outage'] else 'no outage'} | "
                f"{r['published'].get('published', 0):,.0f} | "
                f"{r['consumed_per_s_in_window']:,.0f} | {r['applied_per_s_in_window']:,.0f} | "
                f"{r['upserted_per_s_in_window']:,.0f} | {r['failed_writes']} | "
                f"{r['pending_users_at_end']:,} | {r['lag_at_end']:,} | "
                f"{r['first_write_after_end_s']:.1f} s | {r['drain_s']:.1f} s |"
            )
        print(
            "(rates over the outage window, or the same window without one; pending users and "
            "lag when publishing ended = when Qdrant came back; first write and drain from then)"
        )
    if "broker" in result:
        r = result["broker"]
        print(
            f"\nBroker outage (Tansu on S3 storage, {r['signal']}): down {r['down_s']:.1f} s "
            f"after {r['backlog_consumed_at_stop']:,} of {args.backlog:,} backlog events "
            f"were consumed; offsets committed again {r['reconnect_s']:.1f} s after the "
            f"restart; then {args.backlog:,} more published, the first of them consumed "
            f"{r['consumed_new_s']:.1f} s and everything consumed and in Qdrant "
            f"{r['caught_up_s']:.1f} s after the restart"
        )
    m = result["machine"]
    print(f"\nMachine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}")
    print("Command: .venv/bin/python bench/outage.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
