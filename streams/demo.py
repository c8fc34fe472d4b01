"""`interest-stream demo` (what `make demo` runs): the whole service on this machine.

Exports the encoder if missing, writes the sample replay file (a MovieLens-100k slice with
item texts plus hand-written Chinese and English searches and comments), starts the
embedded broker and `interest-stream up` in the background, replays the file, waits until
the worker caught up and Qdrant holds every vector, prints a few users' top terms and
recommendations, and stops everything.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

from streams.embedded import EmbeddedBroker, ensure_topics
from streams.supervisor import WorkerProcess

SHOW_USERS = ("u1", "u2", "u5", "u999")


def _line(text: str = "") -> None:
    print(text, flush=True)


def run_demo(data_dir: Path, users: int, model: str) -> int:
    from encoders import Encoder
    from streams.movielens import MovieLensMissing, write_sample
    from streams.publish import publish

    t0 = time.monotonic()
    _line("interest-stream demo")
    enc = Encoder(model, auto_export=True)  # exports on first use (~1 min, with progress)
    _line(f"  encoder {enc.spec.name} ({enc.precision}) on {enc.provider}")
    del enc
    shutil.rmtree(data_dir, ignore_errors=True)  # the embedded broker starts empty too
    data_dir.mkdir(parents=True)
    sample = data_dir / "sample.jsonl"
    try:
        counts = write_sample(sample, limit_users=users)
    except MovieLensMissing as err:
        _line(f"error: {err}")
        return 1
    _line(f"  sample: {sum(counts.values()):,} events " + _counts(counts) + f" -> {sample}")

    with EmbeddedBroker(log_path=data_dir / "broker.log") as broker:
        ensure_topics(broker.bootstrap, 4)
        _line(f"  broker: Tansu on {broker.bootstrap} (in-memory log)")
        worker = WorkerProcess(broker.bootstrap, data_dir / "worker", partitions=4)
        worker.env["INTEREST_MODEL"] = model
        worker.start()
        _line(f"  worker: {worker.url} (log {worker.log_path})")
        try:
            # the catalogue first, as in production: clicks published with their items
            # race them across topics, and more than 32 waiting clicks per user are
            # dead-lettered (the parking bound)
            items, events = _split(sample)
            first = asyncio.run(publish(items, broker.bootstrap, progress=False))
            worker.wait_idle(consumed=first.total, timeout=600)
            _line(f"  items: {first.summary()}")
            report = asyncio.run(publish(events, broker.bootstrap, progress=True))
            _line(f"  replay: {report.summary()}")
            t1 = time.monotonic()
            health = worker.wait_idle(consumed=first.total + report.total, timeout=600)
            _line(f"  caught up {time.monotonic() - t1:.1f} s after the replay ended")
            _summary(health)
            for user in SHOW_USERS:
                _show_user(worker, user)
        finally:
            worker.stop()
    _line(f"\ndone in {time.monotonic() - t0:.0f} s; state and Qdrant kept under {data_dir}")
    return 0


def _split(sample: Path) -> tuple[Path, Path]:
    """The sample as two replay files: its item lines, and everything else."""
    items, events = sample.with_suffix(".items.jsonl"), sample.with_suffix(".events.jsonl")
    with items.open("w") as fi, events.open("w") as fe:
        for line in sample.open():
            (fi if json.loads(line).get("type") == "item" else fe).write(line)
    return items, events


def _counts(counts: dict[str, int]) -> str:
    return "(" + ", ".join(f"{k} {v:,}" for k, v in counts.items()) + ")"


def _summary(h: dict) -> None:
    t = h["totals"]
    keys = ("consumed", "applied", "items", "duplicates", "erased", "dead_lettered", "deletes")
    _line("  worker totals: " + ", ".join(f"{k} {t.get(k, 0):,}" for k in keys))
    q = h["qdrant"]
    _line(f"  qdrant: {q['upserted']:,} user points upserted, {q['deleted']} deleted")


def _show_user(worker: WorkerProcess, user: str) -> None:
    status, doc = worker.get(f"/users/{user}/vectors")
    _line(f"\n{user}:")
    if status == 404:
        _line("  no vectors (deleted, or never seen)")
        return
    counts = ", ".join(f"{k} {v}" for k, v in doc["counts"].items() if v)
    _line(f"  events: {counts}")
    _line("  top terms: " + ", ".join(f"{t} {w:.2f}" for t, w in doc["top_terms"][:8]))
    status, rec = worker.get(f"/recommendations/{user}?k=5")
    if status != 200:
        _line(f"  recommendations: {rec}")
        return
    _line("  recommended (score = similarity + popularity prior, p = calibrated):")
    for item in rec["items"]:
        _line(f"    {item['score']:.3f}  p {item['p']:.3f}  {item['title']}")
