"""Hostile input, API security, deletion and graceful shutdown (issue 9), on real parts:
the Tansu broker, `interest-stream up` as a process (RocksDB table, 2 partitions), Qdrant
local mode. One worker serves the module; the tests run in order and the last two restart
it (same data directory).

- Hostile input: INTEREST_FUZZ_MESSAGES (default 2,000) malformed messages drawn by
  hypothesis with a fixed seed (tests/reliability/hostile_input.py), plus three 1 MB
  payloads, mixed with valid events. bench/fuzz.py runs the same with >= 10,000.
- Security: the token on DELETE, every endpoint's input checks, no event text in logs.
- Deletion: through the API; the user stays gone after a SIGTERM restart and after the
  table is rebuilt from the changelog alone (tests/integration/test_pipeline.py checks
  the changelog record itself and a kill -9 restart).
- Graceful shutdown: SIGTERM in the middle of a backlog.

Figures are printed; run with -s to see them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hostile_input import CATEGORIES, MIN_COSINE, run_fuzz

from streams.embedded import EmbeddedBroker, ensure_topics
from streams.publish import json_records, read_records, send_records
from streams.record import UserRecord
from streams.state import StateParams
from streams.supervisor import WorkerProcess

pytestmark = pytest.mark.integration

FUZZ_MESSAGES = int(os.environ.get("INTEREST_FUZZ_MESSAGES", "2000"))
TOKEN = "reliability-token-5e1f"
MARKER = "qx7marker"  # in event texts and queries: must never reach the worker's log
CHANGELOG = "interest-stream-users-changelog"
BACKLOG = 1_200  # searches with distinct texts, for the SIGTERM test
SHUTDOWN_BOUND_S = 30.0
TIMEOUT_S = 300.0  # generous: two shared cores


@pytest.fixture(scope="module")
def stack(tmp_path_factory, e5_exported):
    tmp = tmp_path_factory.mktemp("hostile")
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, 2)
        # small batches, so that a SIGTERM finds one in flight
        env = {"INTEREST_API_TOKEN": TOKEN, "INTEREST_BATCH_SIZE": "100"}
        worker = WorkerProcess(broker.bootstrap, tmp / "data", env=env).start()
        try:
            yield broker, worker
        finally:
            worker.stop()


def send(broker: EmbeddedBroker, worker: WorkerProcess, records: list[tuple]) -> dict:
    """Publish (topic, key, object) records and wait until the worker handled them."""
    before = worker.health()["totals"].get("consumed", 0)
    asyncio.run(send_records(broker.bootstrap, json_records(records)))
    return worker.wait_idle(consumed=before + len(records), timeout=TIMEOUT_S)


def search(user: str, event_id: str, query: str, ts: float = 1.76e9) -> tuple:
    ev = {"event_id": event_id, "user_id": user, "ts": ts, "query": query}
    return ("events.search", user, ev)


def request(url: str, method: str = "GET", headers: dict | None = None) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def changelog(bootstrap: str) -> dict[str, UserRecord | None]:
    """Each user's latest changelog record: the table as a new owner would restore it."""
    log = asyncio.run(read_records(bootstrap, CHANGELOG, expect=10**9, timeout=3))
    latest: dict[str, Any] = {}
    for m in sorted(log, key=lambda m: m.offset):
        latest[m.key.decode()] = m.value
    params = StateParams()
    return {u: None if v is None else UserRecord.from_bytes(v, params) for u, v in latest.items()}


# -- hostile input ----------------------------------------------------------------------------


def test_hostile_input_is_dead_lettered_and_valid_events_end_as_in_a_clean_run(stack):
    broker, worker = stack
    report = run_fuzz(broker.bootstrap, worker, FUZZ_MESSAGES, marker=MARKER, timeout=TIMEOUT_S)
    print("\n" + "\n".join(report.lines()))
    assert worker.proc is not None and worker.proc.poll() is None  # never stopped
    assert set(report.tried) == {*CATEGORIES, "one_mebibyte"}
    assert report.bad == FUZZ_MESSAGES + 3
    # every bad message is in events.dlq once, with a reason and its original bytes
    assert not report.missing, [
        (r.category, r.topic, (r.value or b"")[:80]) for r in report.missing
    ]
    assert not report.wrong_dead_letters, report.wrong_dead_letters[:5]
    assert report.dead_lettered == report.tried and report.valid_dead_lettered == 0
    t = report.totals
    assert t["dead_lettered"] == report.bad, t
    assert t.get("applied", 0) + t.get("duplicates", 0) == 2 * report.valid, t
    assert report.invariant_ok
    # the valid events' results equal the clean run's, user by user
    assert report.users >= 20 and not report.count_mismatches, report.count_mismatches[:3]
    assert report.min_cosine >= MIN_COSINE
    log = worker.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "crashed" not in log.lower()


# -- security ---------------------------------------------------------------------------------


def test_no_event_text_reaches_the_worker_log(stack):
    """Texts and queries carry MARKER (valid and invalid ones, in the fuzz run too); the log
    must not show it at any level, however the event ends."""
    broker, worker = stack
    send(
        broker,
        worker,
        [
            search("log-user", "log1", f"{MARKER} jazz"),
            search("log-user", "log2", f"{MARKER}\x07 bell"),  # dead-lettered
            search("log-user", "log3", f"{MARKER} " + "x" * 30_000),  # too long
            search("log-user", "log4", f"\u200b{MARKER}\u200b"),  # encodes to nothing useful
            ("events.comment", "log-user", {"event_id": "log5", "user_id": "log-user"}),
            ("items", "log-item", {"item_id": "log-item", "title": f"{MARKER} title"}),
        ],
    )
    log = worker.log_path.read_text(errors="replace")
    assert "INFO" in log and MARKER not in log


DELETE_AUTH = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer  {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer "},
    {"X-Api-Token": TOKEN},
]


def test_mutating_calls_are_refused_without_the_exact_token(stack):
    broker, worker = stack
    send(broker, worker, [search("guarded", f"gd{i}", "chess openings") for i in range(3)])
    url = f"{worker.url}/users/guarded"
    for headers in DELETE_AUTH:
        status, ctype, body = request(url, "DELETE", headers)
        assert status == 401 and "application/json" in ctype, (headers, status, body)
        assert "token" in json.loads(body)["error"]
    status, _, _ = request(f"{url}?token={TOKEN}", "DELETE")
    assert status == 401
    # no other method changes anything, on any route
    for path in ("/users/guarded", "/users/guarded/vectors", "/recommendations/guarded", "/"):
        for method in ("POST", "PUT", "PATCH"):
            status, _, _ = request(worker.url + path, method, {"Authorization": f"Bearer {TOKEN}"})
            assert status in (404, 405), (method, path, status)
    assert worker.get("/users/guarded/vectors")[0] == 200
    # Faust's built-in /table (raw table values) and /router endpoints are switched off
    for path in ("/table/", "/table/users/guarded/", "/router/", "/router/users/guarded/"):
        assert request(worker.url + path)[0] == 404, path


LONG_ID = "a" * 129
ID_CASES = [
    "..%2F..%2Fetc%2Fpasswd",
    "..%2F..",
    "%2Fetc%2Fpasswd",
    "%00",
    "u1%00",
    "%FF",
    "%C0%AE%C0%AE",
    "u1%0A",
    "u1%0D%0AX-Injected:%201",
    "%3Cscript%3E",
    "a%20b",
    LONG_ID,
    "a" * 5000,
]
ID_ROUTES = [
    ("GET", "/recommendations/{}"),
    ("GET", "/users/{}/interests"),
    ("GET", "/users/{}/similar"),
    ("GET", "/users/{}/vectors"),
    ("DELETE", "/users/{}"),
]
PARAM_CASES = [
    "/recommendations/guarded?k=101",
    "/recommendations/guarded?k=-1",
    "/recommendations/guarded?k=",
    "/recommendations/guarded?k=1e3",
    "/recommendations/guarded?k=0x10",
    "/recommendations/guarded?k=" + "9" * 5000,
    "/recommendations/guarded?k=%00",
    "/recommendations/guarded?granularity=" + "x" * 3000,
    "/recommendations/guarded?granularity=%00",
    "/recommendations/guarded?tags=" + ",".join(f"t{i}" for i in range(21)),
    "/recommendations/guarded?tags=%0A",
    "/recommendations/guarded?tags=a%00b",
    "/recommendations/guarded?tags=" + "x" * 3000,
    "/users/guarded/similar?k=101",
    "/users/guarded/similar?k=" + "1" * 5000,
    "/users/guarded/similar?k=%F0%9F%98%80",
]


@pytest.mark.parametrize(("method", "route"), ID_ROUTES)
def test_every_endpoint_refuses_bad_ids_with_a_json_400(stack, method, route):
    _, worker = stack
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for raw_id in ID_CASES:
        status, ctype, body = request(worker.url + route.format(raw_id), method, headers)
        assert status == 400 and "application/json" in ctype, (raw_id, status, body[:200])
        error = json.loads(body)["error"]
        assert "user_id must be" in error and len(error) < 200, error


@pytest.mark.parametrize("path", PARAM_CASES)
def test_bad_parameters_get_a_json_400_that_does_not_echo_them_whole(stack, path):
    _, worker = stack
    status, ctype, body = request(worker.url + path)
    assert status == 400 and "application/json" in ctype, (path[:80], status, body[:200])
    assert len(json.loads(body)["error"]) < 200


def test_dot_ids_are_table_keys_not_paths_and_too_long_urls_are_refused(stack):
    _, worker = stack
    for raw_id in ("..", "%2E%2E", "...", ".:@-_"):  # valid ids: nobody by that name
        status, ctype, body = request(f"{worker.url}/users/{raw_id}/vectors")
        assert status == 404 and "application/json" in ctype, (raw_id, body)
    # beyond aiohttp's 8,190-byte request line its parser answers, before any view
    status, _, _ = request(f"{worker.url}/users/{'a' * 9000}/vectors")
    assert status == 400
    assert worker.health()["status"] == "ok"


# -- deletion and restarts --------------------------------------------------------------------


DELETED = "del-user"
KEPT = ["del-kept1", "del-kept2"]


def test_a_user_deleted_through_the_api_is_gone_at_once(stack):
    broker, worker = stack
    records = [
        search(u, f"{u}-{i}", f"private note {i} about sourdough", 1.76e9 + i)
        for u in (DELETED, *KEPT)
        for i in range(3)
    ]
    send(broker, worker, records)
    assert worker.get(f"/users/{DELETED}/vectors")[0] == 200
    before = worker.health()["totals"]["consumed"]
    status, _, body = request(
        f"{worker.url}/users/{DELETED}", "DELETE", {"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 202, body
    worker.wait_idle(consumed=before + 1, timeout=TIMEOUT_S)
    for path in ("vectors", "interests", "similar"):
        assert worker.get(f"/users/{DELETED}/{path}")[0] == 404, path
    status, doc = worker.get(f"/recommendations/{DELETED}")
    assert status == 200 and doc["cold_start_reason"] == "unknown user"
    assert all(worker.get(f"/users/{u}/vectors")[0] == 200 for u in KEPT)


def test_sigterm_mid_backlog_finishes_the_batch_flushes_commits_and_loses_nothing(stack):
    from streams.sink import QdrantSink

    broker, worker = stack
    users = [f"sd{u}" for u in range(40)]
    records = [
        search(users[i % len(users)], f"sd-{i}", f"backlog search {i} for jazz and chess")
        for i in range(BACKLOG)
    ]
    before = worker.health()["totals"]["consumed"]
    asyncio.run(send_records(broker.bootstrap, json_records(records)))
    deadline = time.monotonic() + TIMEOUT_S
    while worker.health()["totals"]["consumed"] - before < 200:  # a few batches in
        assert time.monotonic() < deadline, worker.tail()
        time.sleep(0.05)

    started = time.monotonic()
    code = worker.stop(signal.SIGTERM, timeout=2 * SHUTDOWN_BOUND_S)
    took = time.monotonic() - started
    print(f"\nSIGTERM mid-backlog: exit {code} in {took:.1f} s")
    assert code == 0, worker.tail()
    assert took < SHUTDOWN_BOUND_S
    assert "did not finish within" not in worker.log_path.read_text()

    # what the worker applied before it stopped: its table, as the changelog holds it
    table = changelog(broker.bootstrap)
    applied = {u: table[u].state.counts["search"] for u in users if table.get(u)}
    done = sum(applied.values())
    print(f"applied before the stop: {done} of {BACKLOG}")
    assert 0 < done < BACKLOG  # the SIGTERM came mid-backlog
    # every user state in the table reached Qdrant before the exit (and the deleted user
    # has no point)
    live = {u: r for u, r in table.items() if r and not r.erased and r.state.last_ts}
    with QdrantSink(384, path=worker.data_dir / "qdrant") as sink:
        points = sink.get_users([*live, DELETED])
    assert DELETED not in points and set(points) == set(live)
    for u, r in live.items():
        assert points[u][1]["counts"] == r.state.counts, u

    # restarted on the same data: only what was not applied is read again, once
    worker.start()
    h = worker.wait_idle(consumed=BACKLOG - done, timeout=TIMEOUT_S)
    totals = {k: v for k, v in h["totals"].items() if v}
    assert totals == {"consumed": BACKLOG - done, "applied": BACKLOG - done}, totals
    want = Counter(r[1] for r in records)
    assert {u: worker.get(f"/users/{u}/vectors")[1]["counts"]["search"] for u in users} == want
    assert {k: v for k, v in worker.health()["totals"].items() if v} == totals  # nothing late
    assert worker.get(f"/users/{DELETED}/vectors")[0] == 404


def test_a_table_rebuilt_from_the_changelog_alone_does_not_bring_the_deleted_user_back(stack):
    """The worker's RocksDB files gone (a new machine, or another worker taking over the
    partitions): the table is restored from the changelog, whose latest record of the
    deleted user holds no data."""
    from streams.sink import QdrantSink

    _, worker = stack
    users = [*KEPT, "sd0", "sd1", "fz-u0", "cl-u0", "guarded"]
    before = {u: worker.get(f"/users/{u}/vectors")[1] for u in users}
    assert worker.stop() == 0
    shutil.rmtree(Path(worker.data_dir) / "tables")
    worker.start()
    worker.wait_idle(consumed=0, timeout=TIMEOUT_S)
    for u in users:
        status, doc = worker.get(f"/users/{u}/vectors")
        assert status == 200 and doc == before[u], u
    assert worker.get(f"/users/{DELETED}/vectors")[0] == 404
    assert worker.stop() == 0
    with QdrantSink(384, path=worker.data_dir / "qdrant") as sink:
        points = sink.get_users([*users, DELETED])
    assert set(points) == set(users)
