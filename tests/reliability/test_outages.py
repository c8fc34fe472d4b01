"""Outages while the worker consumes (issue 9): the broker, then Qdrant, go away mid-stream.

Both runs are compared with a clean run of the same events through an undisturbed worker
(module fixture `clean`): every user's vectors (cosine >= 0.9999) and counts, in the table
(the worker's API) and in Qdrant, and the worker's totals (nothing lost, nothing applied
twice).

- Broker: Tansu keeps its log in S3-compatible storage (`moto_server`, DESIGN.md section 9),
  so a restarted broker still has the log, the committed offsets and the group. It is
  stopped (SIGTERM) or killed (SIGKILL) while the worker works through a backlog and
  restarted on the same port and storage after OUTAGE_S; the worker reconnects by itself.
  Then a new worker with empty tables restores every user from the changelog topic (what
  a worker taking over a partition does) and must hold the same state.
- Qdrant: the worker runs qdrant-client local mode (no server binary exists here), so the
  outage is its store locked by another process (`QdrantStoreLock`: an exclusive sqlite
  lock on every collection), while events keep arriving at RATE/s. Its writes fail for
  real ("database is locked"), the state goes on, the changed users stay pending and are
  written once the lock goes. The 30 s outage at 1,000 events/s of the issue is measured
  by bench/outage.py; this test holds it for OUTAGE_S at a rate CI machines sustain.

Figures (reconnect and drain times) are printed; run with -s to see them.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streams.embedded import EmbeddedBroker, ensure_topics
from streams.publish import publish
from streams.supervisor import QdrantStoreLock, S3ServerProcess, WorkerProcess

pytestmark = pytest.mark.integration

PARTITIONS = 2
N_USERS = 120
N_EVENTS = 5_000
DUPLICATE_SHARE = 0.05
RATE = 400.0  # events/s offered during the Qdrant outage
OUTAGE_S = 10.0
BACKLOG_SHARE = 0.6  # of the events published before the broker outage
T0 = 1_763_000_000.0
MIN_COSINE = 0.9999
CHANNELS = ("word", "sentence", "document", "fused", "negative")
TIMEOUT_S = 300.0  # generous: two shared cores

_TOPICS = ["space travel", "sourdough bread", "jazz records", "mountain hiking", "电动汽车"]
_TOPICS += ["红烧肉", "machine learning", "football", "科幻小说", "vintage cameras"]
_LIKES = ["great", "boring", "too long", "beautiful", "太好了", "一般般", "hard to follow"]


def workload(seed: int = 9) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(items, events): clicks on 40 items, searches and comments from small text pools,
    timestamps up to a minute out of order, and DUPLICATE_SHARE events published twice."""
    rng = random.Random(seed)
    items = [
        {
            "type": "item",
            "item_id": f"it{i}",
            "title": f"{_TOPICS[i % len(_TOPICS)]} #{i}",
            "body": f"All about {_TOPICS[i % len(_TOPICS)]}, part {i // len(_TOPICS)}.",
            "tags": [f"t{i % 7}"],
        }
        for i in range(40)
    ]
    queries = [f"{t} {w}" for t in _TOPICS for w in ("best", "near me", "入门")]
    comments = [f"{t} was {w}" for t in _TOPICS for w in _LIKES]
    users = [f"ou{k}" for k in range(N_USERS)]
    weights = [1.0 / (k + 1) ** 0.6 for k in range(N_USERS)]
    unique = round(N_EVENTS * (1 - DUPLICATE_SHARE))
    events: list[dict[str, Any]] = []
    for i in range(unique):
        base = {
            "event_id": f"oe{i}",
            "user_id": rng.choices(users, weights)[0],
            "ts": round(T0 + i * 0.05 + rng.uniform(-60, 60), 3),
        }
        r = rng.random()
        if r < 0.75:
            d = {"type": "click", **base, "item_id": rng.choice(items)["item_id"]}
            if rng.random() < 0.5:
                d["dwell_ms"] = rng.randint(500, 120_000)
            if rng.random() < 0.1:
                d["rating"] = rng.randint(1, 5)
        elif r < 0.9:
            d = {"type": "search", **base, "query": rng.choice(queries)}
        else:
            d = {"type": "comment", **base, "text": rng.choice(comments)}
            if rng.random() < 0.3:
                d["rating"] = rng.randint(1, 5)
        events.append(d)
    # the same event again soon after (a producer's retry): within the worker's window of
    # recent event ids per user whatever the order across topics, so that a clean run
    # and a disturbed one recognise the same duplicates
    for i in sorted(rng.sample(range(unique), N_EVENTS - unique), reverse=True):
        events.insert(i + rng.randint(1, 50), events[i])
    return items, events


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in lines))
    return path


def replay(path: Path, bootstrap: str, rate: float | None = None) -> int:
    return asyncio.run(publish(path, bootstrap, rate=rate, progress=False)).total


def cos(a: Any, b: Any) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@dataclass
class Files:
    items: Path
    events: Path
    users: list[str]
    n_items: int
    n_events: int


@dataclass
class Run:
    """What a run left: totals, the table's vectors and counts (API), Qdrant's points."""

    totals: dict[str, int]
    table: dict[str, dict[str, Any]]
    qdrant: dict[str, tuple[dict[str, list[float]], dict[str, Any]]]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Files:
    tmp = tmp_path_factory.mktemp("outage-data")
    items, events = workload()
    users = sorted({e["user_id"] for e in events})
    return Files(
        write_jsonl(tmp / "items.jsonl", items),
        write_jsonl(tmp / "events.jsonl", events),
        users,
        len(items),
        len(events),
    )


def split(files: Files, tmp: Path) -> tuple[Path, Path]:
    """The events file cut in two: the first BACKLOG_SHARE, and the rest."""
    lines = files.events.read_text().splitlines(keepends=True)
    cut = round(len(lines) * BACKLOG_SHARE)
    (first := tmp / "first.jsonl").write_text("".join(lines[:cut]))
    (rest := tmp / "rest.jsonl").write_text("".join(lines[cut:]))
    return first, rest


def start_worker(
    broker: EmbeddedBroker, data_dir: Path, files: Files, env: dict[str, str] | None = None
) -> WorkerProcess:
    """A worker that has consumed the items (so clicks never wait for them)."""
    worker = WorkerProcess(broker.bootstrap, data_dir, partitions=PARTITIONS, env=env).start()
    replay(files.items, broker.bootstrap)
    worker.wait_idle(consumed=files.n_items, timeout=TIMEOUT_S)
    return worker


def consumed(worker: WorkerProcess) -> int:
    return int(worker.health()["totals"].get("consumed", 0))


def poll_until(what: str, check: Any, timeout: float = TIMEOUT_S, every: float = 0.2) -> float:
    """Poll `check()` until it is true; returns time.monotonic() then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(every)
    raise TimeoutError(f"not within {timeout:.0f}s: {what}")


def read_table(worker: WorkerProcess, users: list[str]) -> dict[str, dict[str, Any]]:
    """Every user's vectors, counts and offsets from the worker's table (its API)."""
    table = {}
    for user in users:
        status, doc = worker.get(f"/users/{user}/vectors")
        assert status == 200, (user, doc)
        table[user] = doc
    return table


def finish(worker: WorkerProcess, files: Files) -> Run:
    """Wait until everything is applied and in Qdrant, read the table, then SIGKILL the
    worker (no shutdown flush: Qdrant holds only what was written while it ran) and read
    Qdrant's directory."""
    from streams.sink import QdrantSink

    h = worker.wait_idle(consumed=files.n_items + files.n_events, timeout=TIMEOUT_S)
    table = read_table(worker, files.users)
    worker.kill()
    with QdrantSink(384, path=worker.data_dir / "qdrant") as sink:
        points = sink.get_users(files.users)
    return Run(dict(h["totals"]), table, points)


class Closeness:
    """Asserts vectors equal up to MIN_COSINE, keeping the smallest cosine seen."""

    def __init__(self) -> None:
        self.worst = 1.0

    def check(self, a: Any, b: Any, where: tuple[str, ...]) -> None:
        assert (a is None) == (b is None), where
        if a is not None:
            c = cos(a, b)
            self.worst = min(self.worst, c)
            assert c >= MIN_COSINE, (*where, c)


def assert_table_equal(table: dict[str, dict[str, Any]], clean: Run) -> Closeness:
    close = Closeness()
    assert set(table) == set(clean.table)
    for user, want in clean.table.items():
        assert table[user]["counts"] == want["counts"], user
        for channel in CHANNELS:
            close.check(table[user]["vectors"][channel], want["vectors"][channel], (user, channel))
    return close


def assert_same_as(got: Run, clean: Run) -> None:
    kinds = ("applied", "duplicates", "erased", "dead_lettered", "parked", "items", "deletes")
    t = got.totals
    assert t["consumed"] == sum(t.get(k, 0) for k in kinds), t  # every message accounted for
    assert t["applied"] == clean.totals["applied"], (t, clean.totals)  # none lost or twice
    assert t.get("dead_lettered", 0) == clean.totals.get("dead_lettered", 0) == 0, t
    # duplicates: the same events published twice as in the clean run, plus any offsets
    # the worker was given again (recognised, not applied)
    assert t["duplicates"] >= clean.totals["duplicates"] > 0, (t, clean.totals)
    close = assert_table_equal(got.table, clean)
    assert set(got.qdrant) == set(clean.qdrant) == set(clean.table), "users in Qdrant"
    for user, (vectors, payload) in got.qdrant.items():
        want_vectors, want_payload = clean.qdrant[user]
        assert payload["counts"] == want_payload["counts"] == clean.table[user]["counts"], user
        assert sorted(vectors) == sorted(want_vectors), user
        for channel, v in vectors.items():
            close.check(v, want_vectors[channel], (user, channel, "qdrant"))
    print(f"\n  {len(clean.table)} users equal to the clean run (min cosine {close.worst:.6f})")


def behind(bootstrap: str) -> dict[tuple[str, int], tuple[int, int]]:
    """(log end, committed or start) of the input partitions where the group's committed
    offset is short of the log end: what a restarted worker would read again."""
    from streams.embedded import INPUT_TOPICS
    from streams.lag_exporter import OffsetReader

    async def read() -> dict[tuple[str, int], tuple[int, int]]:
        reader = await OffsetReader(bootstrap, "interest-stream", INPUT_TOPICS).start()
        try:
            for _ in range(5):  # a partition the broker did not answer in time is left out
                found = await reader.read()
                if len(found) == len(INPUT_TOPICS) * PARTITIONS:
                    break
            else:
                raise AssertionError(f"offsets of some partitions not answered: {found}")
        finally:
            await reader.close()
        return {(o.topic, o.partition): (o.end, o.position) for o in found if o.end > o.position}

    return asyncio.run(read())


@pytest.fixture(scope="module")
def clean(tmp_path_factory, files: Files, e5_exported) -> Run:
    tmp = tmp_path_factory.mktemp("outage-clean")
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, PARTITIONS)
        worker = start_worker(broker, tmp / "data", files)
        try:
            replay(files.events, broker.bootstrap)
            return finish(worker, files)
        finally:
            worker.stop()


@pytest.fixture
def s3(tmp_path) -> Iterator[S3ServerProcess]:
    server = S3ServerProcess(tmp_path / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_broker_restarted_mid_stream_on_s3_storage_loses_and_repeats_nothing(
    tmp_path, files: Files, clean: Run, s3: S3ServerProcess, how: str
) -> None:
    """The first BACKLOG_SHARE of the events wait in the broker; it is stopped (SIGTERM) or
    killed (SIGKILL) once the worker has started on them, and restarted after OUTAGE_S;
    the rest are published to the restarted broker (the worker's prefetch may hold the
    whole backlog: consuming those shows that it reconnected). Then a new worker with
    empty tables rebuilds every user from the changelog, written before, during and after
    the outage, and applies nothing again."""
    storage = s3.create_bucket("tansu")
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", storage=storage, env=s3.client_env())
    broker.start()
    first, rest = split(files, tmp_path)
    worker = restored = None
    try:
        ensure_topics(broker.bootstrap, PARTITIONS)
        # small batches (~50 events: a cap of 400, a text counting as 25 clicks): the whole
        # backlog takes a worker ~1 s in its default batches, so the outage could miss it
        worker = start_worker(broker, tmp_path / "data", files, env={"INTEREST_BATCH_SIZE": "400"})
        w = worker
        n_first = replay(first, broker.bootstrap)
        poll_until("events consumed", lambda: consumed(w) > files.n_items, every=0.02)
        at_stop = consumed(worker)
        broker.stop() if how == "stop" else broker.kill()
        t_stop = time.monotonic()
        while time.monotonic() - t_stop < OUTAGE_S:  # the worker stays up
            assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
            time.sleep(0.5)
        stalled = consumed(worker)
        broker.start()
        t_restart = time.monotonic()
        n_rest = replay(rest, broker.bootstrap)
        assert n_first + n_rest == files.n_events
        before_restart = files.n_items + n_first
        t_back = poll_until(
            f"consuming after the restart (at {stalled:,}, {before_restart:,} before it)",
            lambda: consumed(w) > before_restart,
        )
        got = finish(worker, files)
        t_done = time.monotonic()
        print(
            f"\n  broker {how} mid-stream, down {t_restart - t_stop:.1f} s (at "
            f"{at_stop - files.n_items:,} of {n_first:,} backlog events, {stalled - at_stop:,}"
            f" more from the worker's prefetch meanwhile); {n_rest:,} published after the "
            f"restart, consuming them {t_back - t_restart:.1f} s after it; all consumed and in "
            f"Qdrant {t_done - t_restart:.1f} s after it"
        )
        assert at_stop < before_restart, "the outage must come mid-stream"
        assert_same_as(got, clean)

        # a new worker, empty tables, the same Qdrant (the items' encodings live there)
        shutil.copytree(worker.data_dir / "qdrant", tmp_path / "restored" / "qdrant")
        left = behind(broker.bootstrap)
        again = sum(end - at for end, at in left.values())
        r = restored = WorkerProcess(
            broker.bootstrap, tmp_path / "restored", partitions=PARTITIONS, store="memory"
        ).start(timeout=TIMEOUT_S)
        seen: dict[str, Any] = {}

        def caught_up() -> bool:
            seen["behind"] = behind(broker.bootstrap)
            seen["health"] = h = r.health()
            return not seen["behind"] and h["parked_users"] == h["qdrant"]["pending"] == 0

        try:
            poll_until("the new worker caught up", caught_up, every=1.0)
        except TimeoutError as err:
            raise TimeoutError(f"{err}: {seen}\nbefore it started: {left}\n{r.tail()}") from None
        t = r.health()["totals"]
        # it reads again from the committed offsets (or earlier), and applies only what was
        # not in the changelog yet when the first worker was killed: consumed, not committed
        assert t.get("dead_lettered", 0) == 0 and t.get("applied", 0) <= again, (again, t)
        close = assert_table_equal(read_table(r, files.users), clean)
        print(
            f"  a new worker restored every user from the changelog (min cosine "
            f"{close.worst:.6f}); it read {t.get('consumed', 0):,} messages again "
            f"({again:,} uncommitted) and applied {t.get('applied', 0):,} of them (their "
            f"table writes had not reached the changelog when the first worker was killed)"
        )
    finally:
        for proc in (worker, restored):
            if proc is not None:
                proc.stop()
        broker.stop()


def test_qdrant_locked_while_events_flow_then_the_backlog_is_flushed(
    tmp_path, files: Files, clean: Run
) -> None:
    with EmbeddedBroker(log_path=tmp_path / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, PARTITIONS)
        worker = start_worker(broker, tmp_path / "data", files)
        w = worker
        try:
            sender = threading.Thread(
                target=replay, args=(files.events, broker.bootstrap, RATE), daemon=True
            )
            sender.start()
            poll_until("some events consumed", lambda: consumed(w) >= files.n_items + RATE)
            with QdrantStoreLock(worker.data_dir / "qdrant"):
                t_lock = time.monotonic()
                locked = worker.health()
                # once a write has failed, none can succeed until the lock goes
                fails = locked["qdrant"]["failures"]
                poll_until("a failed write", lambda: w.health()["qdrant"]["failures"] > fails)
                failing = worker.health()
                poll_until("the outage's end", lambda: time.monotonic() - t_lock >= OUTAGE_S)
                during = worker.health()
            t_release = time.monotonic()
            upserted = during["qdrant"]["upserted"]
            t_write = poll_until("a write", lambda: w.health()["qdrant"]["upserted"] > upserted)
            sender.join(TIMEOUT_S)
            got = finish(worker, files)
            t_done = time.monotonic()
        finally:
            worker.stop()
    applied = during["totals"]["applied"] - locked["totals"]["applied"]
    print(
        f"\n  Qdrant locked {t_release - t_lock:.1f} s at {RATE:,.0f} events/s offered: "
        f"{applied:,} events applied meanwhile, {during['qdrant']['pending']} users pending, "
        f"{during['qdrant']['failures'] - fails} failed writes; first write "
        f"{t_write - t_release:.1f} s after the release, everything consumed and in Qdrant "
        f"{t_done - t_release:.1f} s after it"
    )
    assert applied >= RATE * OUTAGE_S / 4, "the state must go on during the outage"
    assert during["qdrant"]["upserted"] == failing["qdrant"]["upserted"], "written while locked"
    assert during["qdrant"]["pending"] > 0
    assert_same_as(got, clean)
