"""End-to-end pipeline benchmark: our batch worker vs a plain per-event Faust agent.

    .venv/bin/python bench/pipeline.py [--quick] [--profile]

One worker process per system, each run with its own embedded broker (Tansu, 4 partitions
per topic) and qdrant-client local mode on disk; the same seeded events for every system,
published by this process with streams.publish (Kafka CreateTime set by the producer).

  ours              `interest-stream up` in a child process (streams.supervisor.WorkerProcess):
                    micro-batches, RocksDB table, background SyncQueue to Qdrant
  baseline          bench/baseline_faust.py: one message at a time, a Faust Table
                    read-modify-write of a JSON state, one encode call per text, one Qdrant
                    upsert per event (the common way)
  baseline-binary   the same with the state as float32 bytes (a careful per-event agent)
  faust-noop-batch  ceilings: a Faust agent that only counts messages (take_events, as
  aiokafka-noop     ours takes them), and a plain aiokafka getmany() loop that only counts

Items are pre-encoded: a preparation run per system consumes the items (MovieLens-100k
titles + genres) and writes them to Qdrant `items`; every measured run then starts from a
copy of that Qdrant directory with a fresh broker and empty tables (ours re-upserts every
user in its table after a restart, which would spill into the next phase), and first
gets one click per item from 64 users outside the workload, which warms its item cache as
a long-running worker's would be.

Phases (the click-only backlog only, for the binary variant and the ceilings):
  click    the click-only backlog is published as fast as possible to the running worker;
           events/s from the first poll of /healthz that saw any of it consumed (that
           first batch excluded) until all consumed ("consumed") and until nothing is
           pending for Qdrant either ("visible")
  text     the same with 30 % text events (20 % searches, 10 % comments) + 70 % clicks
           (--text-share: another share, 2/3 searches and 1/3 comments)
  fresh    click-only events paced at --rate (default 1,000/s) for --warm + --seconds;
           freshness p50/p99 is /healthz `freshness` once all is visible (or --seconds
           after publishing ended, for a worker that cannot keep up): Kafka message
           timestamp (publish) -> Qdrant upsert returned, over the last 10,000
           observations. Ours observes one per upserted user point, for the newest event
           behind it (events coalesced into the same point waited longer: a lower bound);
           the baseline observes every event.
The baselines get the leading --baseline-fraction of each backlog (same events, shorter
runs). With --profile, an extra click-only run of ours and of the baseline under py-spy
(all threads, then the GIL holder only, --profile-seconds each), summarised by component.

Prints tables, the machine line and the command; writes bench/out/pipeline.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from machine import machine_info

from streams.embedded import EmbeddedBroker, ensure_topics
from streams.supervisor import WorkerProcess

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

OUT = HERE / "out" / "pipeline.json"
PARTITIONS = 4
T0 = 1_763_000_000.0  # event time of the first event (Nov 2025); events 10 ms apart
POLL_S = 0.05
# system -> arguments of bench/baseline_faust.py (ours runs `interest-stream up`)
SYSTEMS: dict[str, list[str]] = {
    "ours": [],
    "baseline": ["--state", "json"],  # the common way: JSON state (Faust's default)
    "baseline-binary": ["--state", "binary"],  # the same with a float32 state
    # ceilings: messages counted and dropped
    "faust-noop-event": ["--mode", "noop-event"],
    "faust-noop-batch": ["--mode", "noop-batch"],
    "aiokafka-noop": ["--mode", "aiokafka"],
}
NOOP = ("faust-noop-event", "faust-noop-batch", "aiokafka-noop")
DEFAULT_SYSTEMS = ["ours", "baseline", "baseline-binary", "faust-noop-batch", "aiokafka-noop"]
# phases a system runs (of those asked for): the ceilings and the binary-state variant
# only run the click-only backlog, which is what they are there to explain
PHASES = {"baseline-binary": ("click",), **dict.fromkeys(NOOP, ("click",))}
PROFILED = ("ours", "baseline")


# -- workload ---------------------------------------------------------------------------------


def _zipf_p(n: int, s: float) -> np.ndarray:
    p = 1.0 / np.arange(1, n + 1) ** s
    return p / p.sum()


def load_items() -> list[dict[str, Any]]:
    """MovieLens-100k movies as item events (real titles + genres); 1,682 items."""
    from streams.movielens import read_movies

    return [m.event(ts=None) for m in read_movies().values()]


class Workload:
    """Seeded users (Zipf activity), item popularity (Zipf) and text pools."""

    def __init__(
        self, seed: int, n_users: int, user_zipf: float, item_zipf: float, n_items: int = 0
    ) -> None:
        from workload import short_texts

        self.rng = np.random.default_rng(seed)
        self.items = load_items()[: n_items or None]
        self.item_ids = [d["item_id"] for d in self.items]
        self.item_p = _zipf_p(len(self.items), item_zipf)
        self.rng.shuffle(self.item_p)  # popularity not tied to id order
        self.users = [f"u{k}" for k in self.rng.permutation(n_users)]
        self.user_p = _zipf_p(n_users, user_zipf)
        # searches repeat (head queries): a pool of 1,000 with Zipf(1.0) popularity;
        # comments hardly repeat: a pool of 4,000, uniform
        self.queries = short_texts(1000, seed=seed + 1)
        self.query_p = _zipf_p(len(self.queries), 1.0)
        self.comments = short_texts(4000, seed=seed + 2)
        self.n_users = n_users

    def events(self, n: int, prefix: str, text_share: float = 0.0) -> list[dict[str, Any]]:
        rng = self.rng
        users = rng.choice(len(self.users), n, p=self.user_p)
        items = rng.choice(len(self.item_ids), n, p=self.item_p)
        kind = rng.random(n)
        dwell = rng.lognormal(9.5, 1.2, n).astype(int)  # ms, median ~13 s
        has_dwell = rng.random(n) < 0.6
        rating = rng.integers(1, 6, n)
        has_rating = rng.random(n) < 0.05
        q = rng.choice(len(self.queries), n, p=self.query_p)
        c = rng.integers(0, len(self.comments), n)
        out = []
        for i in range(n):
            base = {
                "event_id": f"{prefix}{i}",
                "user_id": self.users[users[i]],
                "ts": round(T0 + i * 0.01, 3),
            }
            k = kind[i]
            if k < text_share * 2 / 3:
                out.append({"type": "search", **base, "query": self.queries[q[i]]})
            elif k < text_share:
                d = {"type": "comment", **base, "text": self.comments[c[i]]}
                if has_rating[i]:
                    d["rating"] = int(rating[i])
                if i % 2:
                    d["item_id"] = self.item_ids[items[i]]
                out.append(d)
            else:
                d = {"type": "click", **base, "item_id": self.item_ids[items[i]]}
                if has_dwell[i]:
                    d["dwell_ms"] = int(dwell[i])
                if has_rating[i]:
                    d["rating"] = int(rating[i])
                out.append(d)
        return out


def window_stats(events: list[dict[str, Any]], window: int) -> dict[str, float]:
    """Mean distinct users (and texts) per window of `window` consecutive events."""
    users, texts = [], []
    for a in range(0, len(events) - window + 1, window):
        chunk = events[a : a + window]
        users.append(len({e["user_id"] for e in chunk}))
        texts.append(len({e.get("query") or e.get("text") for e in chunk} - {None}))
    return {
        "window": window,
        "distinct_users": float(np.mean(users)) if users else float("nan"),
        "distinct_texts": float(np.mean(texts)) if texts else float("nan"),
    }


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for d in lines:
            f.write(json.dumps(d, ensure_ascii=False, separators=(",", ":")) + "\n")
    return path


def publish(path: Path, bootstrap: str, rate: float | None = None) -> dict[str, float]:
    from streams.publish import publish as replay

    report = asyncio.run(replay(path, bootstrap, rate=rate, progress=False))
    return {"published": report.total, "seconds": report.seconds, "rate": report.rate}


# -- processes ---------------------------------------------------------------------------------


class BaselineProcess(WorkerProcess):
    """bench/baseline_faust.py as a child process, watched like our worker."""

    def __init__(
        self, broker: str, data_dir: Path, *, partitions: int, store: str, extra: list[str]
    ) -> None:
        super().__init__(broker, data_dir, partitions=partitions, store=store)
        self.extra = extra

    def command(self) -> list[str]:
        script = str(HERE / "baseline_faust.py")
        return [sys.executable, script, "worker", *self.options(), *self.extra]

    def start(self, timeout: float = 120.0) -> BaselineProcess:
        super().start(timeout)
        return self


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (all its threads), seconds."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def child_pids(pid: int | None) -> list[int]:
    """The direct children of a process (e.g. the worker's Qdrant local-mode process)."""
    if pid is None:
        return []
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out += [int(c) for c in task.read_text().split()]
        except (OSError, ValueError):
            continue
    return out


class CpuMeter:
    """CPU use of named processes and, under "<name> children", their direct children (the
    worker's Qdrant process; children found at the start)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.kids = {f"{k} children": child_pids(p) for k, p in pids.items() if k != "bench"}
        self.kids = {k: v for k, v in self.kids.items() if v}
        self.start = {k: self._seconds(k) for k in [*pids, *self.kids]}
        self.t = time.monotonic()

    def _seconds(self, key: str) -> float:
        if key in self.pids:
            return cpu_seconds(self.pids[key])
        return sum(cpu_seconds(c) for c in self.kids[key])

    def cores(self) -> dict[str, float]:
        dt = max(time.monotonic() - self.t, 1e-9)
        return {k: round((self._seconds(k) - s) / dt, 3) for k, s in self.start.items()}


def health(proc: WorkerProcess) -> dict[str, Any]:
    for _ in range(50):
        try:
            return proc.health()
        except (OSError, ValueError):
            time.sleep(0.1)
    return proc.health()


def drain(
    proc: WorkerProcess,
    n: int,
    timeout: float,
    base: dict[str, Any] | None = None,
    on_first: Any = None,
) -> dict[str, Any]:
    """Poll /healthz until `n` more messages than in `base` are consumed and nothing is
    pending for Qdrant; rates count from the first poll that saw any (first batch excluded).
    """
    c0 = base["totals"].get("consumed", 0) if base else 0
    u0 = base["qdrant"]["upserted"] if base else 0
    b0 = base.get("batches", 0) if base else 0
    start = time.monotonic()
    timeline = []
    t_first = c_first = t_consumed = t_visible = None
    upserted_first = 0
    h: dict[str, Any] = {}
    while time.monotonic() - start < timeout:
        if proc.proc is not None and proc.proc.poll() is not None:
            raise RuntimeError(f"worker exited:\n{proc.tail()}")
        h = health(proc)
        now = time.monotonic()
        consumed = h["totals"].get("consumed", 0) - c0
        pending = h["qdrant"]["pending"]
        upserted = h["qdrant"]["upserted"] - u0
        timeline.append((round(now - start, 3), consumed, pending, upserted))
        if t_first is None and consumed > 0:
            t_first, c_first, upserted_first = now, consumed, upserted
            if on_first is not None:
                on_first()
        if t_consumed is None and consumed >= n:
            t_consumed = now
        if consumed >= n and pending == 0 and h.get("parked_users", 0) == 0:
            t_visible = now
            break
        time.sleep(POLL_S)
    if t_visible is None:
        raise TimeoutError(f"not drained after {timeout:.0f}s: {h}\n{proc.tail()}")
    assert t_first is not None and c_first is not None and t_consumed is not None
    work = n - c_first
    dt_c = max(t_consumed - t_first, 1e-9)
    dt_v = max(t_visible - t_first, 1e-9)
    points = h["qdrant"]["upserted"] - u0 - upserted_first
    totals = {k: v - (base["totals"].get(k, 0) if base else 0) for k, v in h["totals"].items()}
    # distinct texts per batch: encoded, or from the text cache (ours only; streams/text_cache.py)
    texts = {
        k: v - (base.get("texts", {}).get(k, 0) if base else 0)
        for k, v in h.get("texts", {}).items()
    }
    return {
        "events": n,
        "first_batch": c_first,
        "consumed_per_s": work / dt_c,
        "visible_per_s": work / dt_v,
        "seconds_consumed": dt_c,
        "seconds_visible": dt_v,
        "points_upserted": points,
        "points_per_s": points / dt_v,
        "batches": (h.get("batches") or 0) - b0,
        "totals": totals,
        "texts": texts,
        "timeline": timeline,
        "t_visible": t_visible,
    }


def py_spy(pid: int, seconds: int, out: Path, gil: bool = False) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("py-spy")
    cmd = [
        str(exe if exe.exists() else "py-spy"),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        "100",
        "--format",
        "raw",
        "--threads",
        "--output",
        str(out),
    ]
    if gil:
        cmd.append("--gil")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class Profiler:
    """Two py-spy runs back to back: all threads, then only the GIL holder."""

    def __init__(self, pid: int, seconds: int, folder: Path, label: str) -> None:
        self.outs = {
            "threads": folder / f"profile-{label}-threads.txt",
            "gil": folder / f"profile-{label}-gil.txt",
        }
        self.errors: dict[str, str] = {}
        self.thread = threading.Thread(target=self._run, args=(pid, seconds), daemon=True)
        self.thread.start()

    def _run(self, pid: int, seconds: int) -> None:
        for mode, out in self.outs.items():
            spy = py_spy(pid, seconds, out, gil=mode == "gil")
            _, err = spy.communicate()
            if spy.returncode != 0:
                self.errors[mode] = err.decode(errors="replace")[-2000:]

    def result(self) -> dict[str, Any]:
        self.thread.join()
        out: dict[str, Any] = {"errors": self.errors} if self.errors else {}
        for mode, path in self.outs.items():
            if path.exists() and mode not in self.errors:
                out[mode] = summarise_profile(path)
                out[f"{mode}_file"] = str(path)
        return out


# -- one system -----------------------------------------------------------------------------


class System:
    def __init__(self, name: str, args: argparse.Namespace, tmp: Path, warm: Path) -> None:
        self.name = name
        self.args = args
        self.tmp = tmp / name
        self.tmp.mkdir(parents=True)
        self.warm = warm  # one click per item: fills the item cache of a fresh worker
        self.n_warm = sum(1 for _ in warm.open())
        self.template: Path | None = None  # a Qdrant directory holding the encoded items
        self.runs = 0

    @property
    def qdrant_dir(self) -> str:
        """Where the worker keeps its embedded Qdrant (streams/config.py qdrant_path)."""
        env = dict(kv.split("=", 1) for kv in self.args.worker_env)
        edge = self.name == "ours" and env.get("INTEREST_QDRANT_ENGINE") == "edge"
        return "qdrant-edge" if edge else "qdrant"

    def process(self, bootstrap: str, data: Path) -> WorkerProcess:
        if self.name == "ours":
            env = dict(kv.split("=", 1) for kv in self.args.worker_env)
            return WorkerProcess(bootstrap, data, partitions=PARTITIONS, env=env)
        return BaselineProcess(
            bootstrap,
            data,
            partitions=PARTITIONS,
            store=self.args.baseline_store,
            extra=SYSTEMS[self.name],
        )

    def fresh(self, label: str) -> tuple[EmbeddedBroker, Path]:
        self.runs += 1
        d = self.tmp / f"{self.runs}-{label}"
        d.mkdir()
        broker = EmbeddedBroker(log_path=d / "tansu.log").start()
        ensure_topics(broker.bootstrap, PARTITIONS)
        data = d / "data"
        data.mkdir()
        if self.template is not None:
            shutil.copytree(self.template, data / self.qdrant_dir)
        return broker, data

    def prepare_items(self, items_file: Path, n_items: int) -> dict[str, Any]:
        """Encode the items once; later runs start from a copy of this Qdrant directory."""
        broker, data = self.fresh("items")
        try:
            proc = self.process(broker.bootstrap, data)
            t = time.monotonic()
            proc.start()
            startup = time.monotonic() - t
            pub = publish(items_file, broker.bootstrap)
            res = drain(proc, n_items, timeout=600)
            time.sleep(1.0)  # our item writes to Qdrant run every 50 ms in the background
            assert proc.stop() == 0, proc.tail()
        finally:
            broker.stop()
        self.template = self.tmp / "items-qdrant"
        shutil.copytree(data / self.qdrant_dir, self.template)
        return {
            "publish": pub,
            "startup_s": startup,
            "items_per_s": res["consumed_per_s"],
            "seconds": res["seconds_visible"],
        }

    def started(self, label: str) -> tuple[EmbeddedBroker, WorkerProcess, dict[str, Any]]:
        """A fresh broker and worker (empty table, items in Qdrant), its item cache warmed
        by one click per item from users outside the workload; returns /healthz after."""
        broker, data = self.fresh(label)
        try:
            proc = self.process(broker.bootstrap, data)
            t = time.monotonic()
            proc.start()
            startup = time.monotonic() - t
            publish(self.warm, broker.bootstrap)
            drain(proc, self.n_warm, timeout=300)
            h = health(proc)
            h["startup_s"] = startup
            return broker, proc, h
        except BaseException:
            broker.stop()
            raise

    def backlog(self, label: str, path: Path, n: int, profile_s: int = 0) -> dict[str, Any]:
        """Publish `n` events as fast as possible to a running, warmed worker; time it."""
        broker, proc, h0 = self.started(label)
        profiler: Profiler | None = None
        try:
            assert proc.proc is not None and broker._proc is not None
            pids = {"worker": proc.proc.pid, "broker": broker._proc.pid, "bench": os.getpid()}
            meter = [CpuMeter(pids)]

            def first() -> None:
                nonlocal profiler
                meter[0] = CpuMeter(pids)
                if profile_s:
                    profiler = Profiler(proc.proc.pid, profile_s, self.tmp, label)  # type: ignore[union-attr]

            pub: dict[str, Any] = {}
            publisher = threading.Thread(
                target=lambda: pub.update(publish(path, broker.bootstrap)), daemon=True
            )
            publisher.start()
            res = drain(proc, n, timeout=900, base=h0, on_first=first)
            res["cpu_cores"] = meter[0].cores()
            publisher.join()
            res["publish"] = pub
            res["startup_s"] = h0["startup_s"]
            if profiler is not None:
                res["profile"] = profiler.result()
            assert proc.stop() == 0, proc.tail()
        finally:
            broker.stop()
        return res

    def freshness(
        self, path: Path, n: int, n_warm: int, rate: float, grace: float
    ) -> dict[str, Any]:
        """`n` click events paced at `rate`/s to a running, warmed worker."""
        broker, proc, h0 = self.started("fresh")
        try:
            samples: list[tuple[float, dict[str, Any]]] = []
            stop = threading.Event()

            def poll() -> None:
                while not stop.is_set():
                    with contextlib.suppress(OSError, ValueError):
                        samples.append((time.monotonic(), proc.health()))
                    stop.wait(0.25)

            poller = threading.Thread(target=poll, daemon=True)
            assert proc.proc is not None and broker._proc is not None
            meter = CpuMeter({"worker": proc.proc.pid, "broker": broker._proc.pid})
            t_pub = time.monotonic()
            poller.start()
            pub = publish(path, broker.bootstrap, rate=rate)
            t_end = time.monotonic()
            cores = meter.cores()
            h_end = health(proc)
            # a worker that keeps up drains within seconds; one that does not gets `grace`
            # seconds more, and its freshness is that of what it made visible by then
            try:
                res: dict[str, Any] | None = drain(proc, n, timeout=grace, base=h0)
            except TimeoutError:
                res = None
            stop.set()
            poller.join()
            h = health(proc)
            assert proc.stop() == 0, proc.tail()
        finally:
            broker.stop()
        c_base = h0["totals"].get("consumed", 0)
        # the paced warm-up ends at event n_warm, due at t_pub + n_warm / rate
        after = [(t, s) for t, s in samples if t >= t_pub + n_warm / rate]
        c0 = after[0][1]["totals"].get("consumed", 0) if after else c_base
        f0 = after[0][1]["freshness"]["count"] if after else h0["freshness"]["count"]
        t0 = after[0][0] if after else t_pub
        consumed_end = h_end["totals"].get("consumed", 0)
        return {
            "offered_per_s": rate,
            "published": pub,
            "consumed_per_s_while_offered": (consumed_end - c0) / max(t_end - t0, 1e-9),
            "lag_at_end_of_publishing": n - (consumed_end - c_base),
            # less than a second of events behind when publishing stopped
            "kept_up": n - (consumed_end - c_base) <= rate,
            "drained": res is not None,
            "seconds_to_visible_after_publishing": None
            if res is None
            else res["t_visible"] - t_end,
            "consumed_when_measured": h["totals"].get("consumed", 0) - c_base,
            "freshness": h["freshness"],
            "observations_after_warmup": h["freshness"]["count"] - f0,
            "points_upserted": h["qdrant"]["upserted"] - h0["qdrant"]["upserted"],
            "cpu_cores_while_offered": cores,
            "startup_s": h0["startup_s"],
            "timeline": [
                (
                    round(t - t_pub, 2),
                    s["totals"].get("consumed", 0) - c_base,
                    s["qdrant"]["pending"],
                    s["freshness"].get("p99_s"),
                )
                for t, s in samples
            ],
        }


# -- profile summary ---------------------------------------------------------------------------

# (component, substrings any frame of a stack may contain); the first rule that matches wins,
# so specific rules come before general ones. Leaf frames that only wait are "idle".
IDLE_LEAVES = (
    "EpollSelector.select (",
    "_worker (concurrent/futures/thread.py",
    "Thread.wait (",
    "Condition.wait (",
)
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("/healthz", ("healthz (streams/app.py", "status (streams/app.py", "healthz (baseline")),
    # Faust decoding each Kafka message (raw serializer, but its schema path per message)
    ("Faust stream/consumer machinery", ("Schema.compile.<locals>.decode (",)),
    ("encoder (ONNX Runtime, tokenize, pool)", ("encoders/",)),
    ("Qdrant item lookups (cache misses)", ("get_items (streams/sink.py",)),
    ("Qdrant local: sqlite persist (pickle + sqlite)", ("qdrant_client/local/persistence.py",)),
    ("Qdrant local: validate, numpy update, JSON", ("qdrant_client/",)),
    ("Qdrant: our point structs (lists, uuid, checks)", ("_user_struct (", "upsert_users (")),
    ("SyncQueue.mark checks (_user_parts)", ("mark (streams/sync_queue.py",)),
    (
        "user point: vectors, fused, top terms",
        ("user_point (streams/user_points.py", "vectors (bench/baseline_faust.py"),
    ),
    (
        "state decode + encode (record bytes / JSON)",
        (
            "from_bytes (streams/record.py",
            "to_bytes (streams/record.py",
            "faust/serializers/",
            "faust/models/",
        ),
    ),
    ("table read/write (Faust store + changelog send)", ("faust/tables/", "faust/stores/")),
    ("validation (json + pydantic)", ("parse_event (", "_validate (streams/worker.py")),
    (
        "state math (apply_batch / per-event update)",
        ("apply_batch (", "from_events (streams/state.py", "update (bench/baseline_faust.py"),
    ),
    ("item cache", ("streams/items.py",)),
    (
        "worker other (dedupe, encoded_event, ...)",
        ("streams/worker.py", "streams/profile.py", "streams/sentiment.py"),
    ),
    ("agent other (commit, message copy)", ("streams/app.py", "bench/baseline_faust.py")),
    ("aiokafka (fetch, decode, produce)", ("aiokafka/",)),
    ("Faust stream/consumer machinery", ("faust/", "mode/")),
    ("asyncio event loop", ("asyncio/",)),
]


def classify(stack: str) -> str:
    leaf = stack.rsplit(";", 1)[-1]
    if any(leaf.startswith(x) for x in IDLE_LEAVES):
        return "idle (waiting in epoll / for work)"
    for name, needles in RULES:
        if any(n in stack for n in needles):
            return name
    return "other"


def summarise_profile(path: Path) -> dict[str, Any]:
    """Shares of py-spy samples by component and by thread."""
    by_comp: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    comp_thread: dict[str, Counter[str]] = defaultdict(Counter)
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        k = int(n)
        head = stack.split(";", 1)[0]  # "thread (0x7f..): MainThread" or "thread (123)"
        name = head.split(": ", 1)[1] if ": " in head else head
        comp = classify(stack)
        by_comp[comp] += k
        by_thread[name] += k
        comp_thread[comp][name] += k
        total += k
    total = max(total, 1)
    return {
        "samples": total,
        "components": {c: round(100 * k / total, 1) for c, k in by_comp.most_common()},
        "threads": {t: round(100 * k / total, 1) for t, k in by_thread.most_common()},
        "component_threads": {
            c: {t: round(100 * k / total, 1) for t, k in ts.most_common()}
            for c, ts in comp_thread.items()
        },
    }


# -- main ------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, ~2 minutes")
    ap.add_argument(
        "--systems",
        nargs="+",
        choices=list(SYSTEMS),
        default=None,
        help=f"default: {' '.join(DEFAULT_SYSTEMS)} (--quick: ours baseline)",
    )
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--items", type=int, default=None, help="first N MovieLens items (all)")
    ap.add_argument("--user-zipf", type=float, default=0.8)
    ap.add_argument("--item-zipf", type=float, default=1.0)
    ap.add_argument("--clicks", type=int, default=None, help="click backlog (ours)")
    ap.add_argument("--texts", type=int, default=None, help="text-mix backlog (ours)")
    ap.add_argument(
        "--text-share",
        type=float,
        default=0.3,
        help="share of text events in the text mix (2/3 searches, 1/3 comments); 1.0 with "
        "--worker-env INTEREST_DEVICE=cuda is issue 10's GPU pipeline run",
    )
    ap.add_argument(
        "--baseline-fraction",
        type=float,
        default=None,
        help="the baseline gets this leading share of each backlog",
    )
    ap.add_argument("--rate", type=float, default=1000.0, help="offered events/s (fresh)")
    ap.add_argument("--seconds", type=float, default=None, help="measured paced seconds")
    ap.add_argument("--warm", type=float, default=None, help="paced warm-up seconds")
    ap.add_argument("--phases", nargs="+", default=["click", "text", "fresh"])
    ap.add_argument("--profile", action="store_true", help="py-spy our worker (click-only)")
    ap.add_argument("--profile-seconds", type=int, default=12)
    ap.add_argument(
        "--profile-events",
        type=int,
        default=None,
        help="click backlog of the profiled run (more than it eats in the seconds)",
    )
    ap.add_argument("--baseline-store", choices=["rocksdb", "memory"], default="rocksdb")
    ap.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="INTEREST_X=V",
        help="settings for our worker (repeatable)",
    )
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    q = args.quick
    args.items = args.items if args.items is not None else (300 if q else 0)
    args.clicks = args.clicks or (3_000 if q else 20_000)
    args.texts = args.texts or (600 if q else 4_000)
    args.baseline_fraction = args.baseline_fraction or (0.5 if q else 1 / 3)
    args.seconds = args.seconds or (6.0 if q else 25.0)
    args.warm = args.warm if args.warm is not None else (2.0 if q else 5.0)
    if args.systems is None:
        args.systems = ["ours", "baseline"] if q else DEFAULT_SYSTEMS

    wl = Workload(args.seed, args.users, args.user_zipf, args.item_zipf, args.items)
    clicks = wl.events(args.clicks, "c")
    if not 0.0 < args.text_share <= 1.0:
        ap.error("--text-share must be in (0, 1]")
    texts = wl.events(args.texts, "t", text_share=args.text_share)
    n_warm = int(args.warm * args.rate)
    paced = wl.events(n_warm + int(args.seconds * args.rate), "f")
    profile_n = args.profile_events or (6_000 if q else 20_000)
    profiled = wl.events(profile_n, "p") if args.profile else []
    # one click per item by users outside the workload: warms a fresh worker's item cache
    warm = [
        {
            "type": "click",
            "event_id": f"w{i}",
            "user_id": f"warm{i % 64}",
            "item_id": item,
            "ts": T0 - 3600 + i * 0.01,
        }
        for i, item in enumerate(wl.item_ids)
    ]
    stats = {
        "items": len(wl.items),
        "users": args.users,
        "user_zipf": args.user_zipf,
        "click": [window_stats(clicks, w) for w in (1000, 2000, 10_000)],
        "text": [window_stats(texts, w) for w in (500, 2000)],
        "text_kinds": dict(Counter(e["type"] for e in texts)),
    }
    info = machine_info()
    machine = f"{info['cpu']}, {info['cores']} cores, {info['platform']}, Python {info['python']}"
    command = " ".join([".venv/bin/python", "bench/pipeline.py", *sys.argv[1:]])
    print(f"Machine: {machine}")
    print(f"Command: {command}")
    print(
        f"Workload: {len(wl.items):,} MovieLens items; {args.users:,} users "
        f"(Zipf {args.user_zipf}); "
        f"distinct users per 1,000 / 2,000 / 10,000 click events: "
        + " / ".join(f"{s['distinct_users']:,.0f}" for s in stats["click"])
    )
    print(
        f"text mix {stats['text_kinds']}; distinct texts per 500 / 2,000 events: "
        + " / ".join(f"{s['distinct_texts']:,.0f}" for s in stats["text"]),
        flush=True,
    )

    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    results: dict[str, Any] = {}
    try:
        files = {
            "items": write_jsonl(tmp / "items.jsonl", wl.items),
            "profile": write_jsonl(tmp / "profile.jsonl", profiled),
            "warm": write_jsonl(tmp / "warm.jsonl", warm),
            "fresh": write_jsonl(tmp / "fresh.jsonl", paced),
        }
        for name in args.systems:
            noop = name in NOOP
            phases = [p for p in args.phases if p in PHASES.get(name, ("click", "text", "fresh"))]
            frac = 1.0 if name == "ours" or noop else args.baseline_fraction
            n_click, n_text = int(len(clicks) * frac), int(len(texts) * frac)
            files[f"click-{name}"] = write_jsonl(tmp / f"click-{name}.jsonl", clicks[:n_click])
            files[f"text-{name}"] = write_jsonl(tmp / f"text-{name}.jsonl", texts[:n_text])
            sys_ = System(name, args, tmp, files["warm"])
            r: dict[str, Any] = {}
            t = time.monotonic()
            if not noop:
                print(f"\n[{name}] encoding {len(wl.items):,} items ...", flush=True)
                r["items"] = sys_.prepare_items(files["items"], len(wl.items))
                print(
                    f"[{name}] items: {r['items']['items_per_s']:,.0f}/s, startup "
                    f"{r['items']['startup_s']:.1f} s",
                    flush=True,
                )
            if "click" in phases:
                r["click"] = sys_.backlog("click", files[f"click-{name}"], n_click)
                print(f"[{name}] click: {_brief(r['click'])}", flush=True)
            if "text" in phases:
                r["text"] = sys_.backlog("text", files[f"text-{name}"], n_text)
                print(f"[{name}] text:  {_brief(r['text'])}", flush=True)
            if "fresh" in phases:
                r["fresh"] = sys_.freshness(
                    files["fresh"], len(paced), n_warm, args.rate, grace=max(10.0, args.seconds)
                )
                f = r["fresh"]
                print(
                    f"[{name}] fresh: p50 {f['freshness']['p50_s']} s, p99 "
                    f"{f['freshness']['p99_s']} s; consumed "
                    f"{f['consumed_per_s_while_offered']:,.0f}/s while offered "
                    f"{args.rate:,.0f}/s; lag at end {f['lag_at_end_of_publishing']:,}",
                    flush=True,
                )
            if args.profile and name in PROFILED:
                n_prof = int(len(profiled) * (1.0 if name == "ours" else args.baseline_fraction))
                files[f"profile-{name}"] = write_jsonl(
                    tmp / f"profile-{name}.jsonl", profiled[:n_prof]
                )
                r["profiled"] = sys_.backlog(
                    "profile", files[f"profile-{name}"], n_prof, profile_s=args.profile_seconds
                )
                print(f"[{name}] profiled click run: {_brief(r['profiled'])}", flush=True)
            r["seconds"] = time.monotonic() - t
            results[name] = r
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    report(results, args, stats, machine, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "machine": info,
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "workload": stats,
        "results": results,
    }
    args.out.write_text(json.dumps(doc, indent=1, default=str))
    print(f"\nwrote {args.out}")
    return 0


def _brief(r: dict[str, Any]) -> str:
    return (
        f"{r['events']:,} events: consumed {r['consumed_per_s']:,.0f}/s, visible "
        f"{r['visible_per_s']:,.0f}/s, {r['points_per_s']:,.0f} points/s, "
        f"avg batch {r['events'] / max(r['batches'] or 1, 1):,.0f}, cores {r.get('cpu_cores')}"
        + (f", {_texts(r)}" if _texts(r) else "")
    )


def _texts(r: dict[str, Any]) -> str:
    t = r.get("texts") or {}
    if not any(t.values()):
        return ""
    return f"texts encoded {t.get('encoded', 0):,} / from the text cache {t.get('cached', 0):,}"


def report(
    results: dict[str, Any], args: argparse.Namespace, stats: dict, machine: str, command: str
) -> None:
    print(
        "\n| system | mix | events | consumed/s | visible in Qdrant/s | avg batch | "
        "Qdrant points/s | ours ÷ this |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for mix in ("click", "text"):
        ours = results.get("ours", {}).get(mix)
        for name, r in results.items():
            if mix not in r:
                continue
            x = r[mix]
            ratio = f"{ours['visible_per_s'] / x['visible_per_s']:.2f}x" if ours else "-"
            label = "click only" if mix == "click" else f"{args.text_share:.0%} text"
            batch = x["events"] / max(x["batches"] or 1, 1)
            print(
                f"| {name} | {label} | {x['events']:,} | {x['consumed_per_s']:,.0f} | "
                f"{x['visible_per_s']:,.0f} | {batch:,.0f} | {x['points_per_s']:,.0f} | "
                f"{ratio} |"
            )
    for name, r in results.items():
        if "text" in r and _texts(r["text"]):
            print(f"{name}, text mix, distinct texts of each batch: {_texts(r['text'])}")
    print(
        f"\n| system | freshness p50 / p99 @ {args.rate:,.0f}/s offered | consumed/s | "
        "kept up | lag at end of publishing | observations after warm-up |"
    )
    print("|---|---:|---:|---|---:|---:|")
    for name, r in results.items():
        if "fresh" not in r:
            continue
        f = r["fresh"]
        kept = "yes" if f["kept_up"] else "no"
        if f["drained"]:
            kept += f", all visible {f['seconds_to_visible_after_publishing']:.1f} s after the last"
        else:
            kept += (
                f", {f['consumed_when_measured']:,} of {f['published']['published']:,} "
                "consumed when measured"
            )
        print(
            f"| {name} | {f['freshness']['p50_s']} s / {f['freshness']['p99_s']} s | "
            f"{f['consumed_per_s_while_offered']:,.0f} | {kept} | "
            f"{f['lag_at_end_of_publishing']:,} | {f['observations_after_warmup']:,} |"
        )
    for name, r in results.items():
        prof = r.get("profiled", {}).get("profile", {})
        for mode, title in (("threads", "all threads"), ("gil", "GIL holder only")):
            p = prof.get(mode)
            if not p:
                continue
            x = r["profiled"]
            print(
                f"\nProfile of {name}, click-only backlog at {x['visible_per_s']:,.0f} events/s, "
                f"py-spy {title}, {p['samples']:,} samples:"
            )
            for comp, pct in p["components"].items():
                print(f"  {pct:5.1f} %  {comp}")
            print("  by thread: " + ", ".join(f"{t} {q} %" for t, q in p["threads"].items()))
        if prof.get("errors"):
            print(f"\npy-spy failed for {name}: {prof['errors']}")
    print(f"\nMachine: {machine}\nCommand: {command}")


if __name__ == "__main__":
    raise SystemExit(main())
