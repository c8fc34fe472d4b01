"""Every PromQL expression of the dashboard and the alert rules, run by a real Prometheus
(Debian package) that scrapes a real worker and the lag exporter while events are
replayed; then the exporter's lag through a paused and resumed worker."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from streams.embedded import EmbeddedBroker, ensure_topics, free_port
from streams.publish import json_records, send_records
from streams.supervisor import LagExporterProcess, WorkerProcess

pytestmark = pytest.mark.integration

MONITORING = Path(__file__).parents[2] / "monitoring"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "interest-stream.json"


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p["targets"]]


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
    return [r for g in groups for r in g["rules"]]


def query(base: str, expr: str) -> dict:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def value(base: str, expr: str) -> float | None:
    """The single value of an instant query (None: no data)."""
    result = query(base, expr)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def wait_for(base: str, expr: str, ok: Callable[[float | None], bool], timeout: float) -> float:
    """Poll an instant query until `ok(value)`; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    seen: float | None = None
    while time.monotonic() < deadline:
        try:
            seen = value(base, expr)
            if ok(seen):
                return seen  # type: ignore[return-value]
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{expr}: still {seen} after {timeout:.0f}s")


def clicks(n: int, first: int = 0) -> list[tuple[str, bytes, bytes]]:
    records = []
    for i in range(first, first + n):
        user = f"u{i % 5}"
        ev = {"event_id": f"e{i}", "user_id": user, "item_id": f"m{1 + i % 2}", "ts": time.time()}
        records.append(("events.click", user, ev))
    return json_records(records)


@dataclass
class Stack:
    broker: str
    worker: WorkerProcess
    exporter: LagExporterProcess
    prometheus: str  # base URL
    published: int  # messages on the input topics so far


@pytest.fixture(scope="module")
def stack(tmp_path_factory, e5_exported):
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail(
            "Debian prometheus is not installed: apt-get install -y prometheus (make test does)"
        )
    tmp = tmp_path_factory.mktemp("monitoring")
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, 2)
        worker = WorkerProcess(broker.bootstrap, tmp / "data").start()
        exporter = LagExporterProcess(
            broker.bootstrap, "interest-stream", tmp / "lag-exporter.log", interval_s=1
        )
        proc = None
        try:
            exporter.start()
            config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
            config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
            config["rule_files"] = [str(MONITORING / "alerts.yml")]
            targets = {"interest-stream": worker.url, "interest-lag-exporter": exporter.url}
            assert {job["job_name"] for job in config["scrape_configs"]} == set(targets)
            for job in config["scrape_configs"]:  # compose's service discovery -> our processes
                job.pop("dns_sd_configs", None)
                job["static_configs"] = [{"targets": [targets[job["job_name"]].split("//")[1]]}]
            (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
            port = free_port()
            with (tmp / "prometheus.log").open("wb") as log:
                proc = subprocess.Popen(
                    [
                        exe,
                        f"--config.file={tmp / 'prometheus.yml'}",
                        f"--storage.tsdb.path={tmp / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            base = f"http://127.0.0.1:{port}"
            items = [
                ("items", "m1", {"item_id": "m1", "title": "Space opera", "body": "Starships."}),
                ("items", "m2", {"item_id": "m2", "title": "Bread", "body": "Sourdough."}),
            ]
            raw = json_records(items) + clicks(30)
            asyncio.run(send_records(broker.bootstrap, raw))
            worker.wait_idle(consumed=len(raw))
            # both jobs scraped at least once before the bad message
            wait_for(base, 'count(up{job=~"interest-.*"} == 1)', lambda v: v == 2, 30)
            wait_for(base, "count(interest_events_consumed_total)", bool, 30)
            wait_for(base, "count(interest_consumergroup_lag_messages)", bool, 30)
            # a broken message after that first scrape, so its counter visibly increases
            asyncio.run(send_records(broker.bootstrap, [("events.click", b"u1", b"{broken")]))
            worker.wait_idle(consumed=len(raw) + 1)
            time.sleep(4)
            yield Stack(broker.bootstrap, worker, exporter, base, len(raw) + 1)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)
            exporter.stop()
            worker.stop()


@pytest.mark.parametrize("expr", dashboard_exprs())
def test_every_dashboard_expression_returns_data(stack, expr):
    doc = query(stack.prometheus, expr)
    assert doc["status"] == "success", doc
    assert doc["data"]["result"], f"no data for {expr}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_expression_runs_and_the_dead_letter_alert_sees_data(stack, rule):
    doc = query(stack.prometheus, rule["expr"])
    assert doc["status"] == "success", doc
    if rule["alert"] == "DeadLetters":  # the replay contained one broken message
        assert doc["data"]["result"], doc
    with urllib.request.urlopen(f"{stack.prometheus}/api/v1/rules", timeout=10) as r:
        loaded = {x["name"] for g in json.loads(r.read())["data"]["groups"] for x in g["rules"]}
    assert rule["alert"] in loaded  # Prometheus parsed and loaded the rule file


def test_the_compose_prometheus_config_and_rules_pass_promtool():
    """The file compose mounts as it is (DNS service discovery included), not the copy."""
    promtool = shutil.which("promtool")  # ships with Debian's prometheus
    assert promtool, "promtool missing: apt-get install -y prometheus"
    for args in (["check", "config"], ["check", "rules"]):
        path = MONITORING / ("prometheus.yml" if args[1] == "config" else "alerts.yml")
        done = subprocess.run([promtool, *args, str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


# last in this module: it stops the worker for a while
def test_lag_exporter_sees_a_paused_worker_fall_behind_and_catch_up(stack):
    """SIGSTOP the worker: it consumes nothing and its own /metrics is gone, while the
    exporter's lag (through Prometheus) counts the new events and their age; SIGCONT: the
    worker consumes and commits, and the lag returns to 0."""
    base, group = stack.prometheus, '{group="interest-stream"}'
    lag = f"sum(interest_consumergroup_lag_messages{group})"
    age = f"max(interest_consumergroup_lag_seconds{group})"
    wait_for(base, lag, lambda v: v == 0, 60)
    wait_for(base, age, lambda v: v == 0, 60)

    stack.worker.pause()
    try:
        more = clicks(20, first=1000)
        asyncio.run(send_records(stack.broker, more))
        wait_for(base, lag, lambda v: v == len(more), 60)
        wait_for(base, age, lambda v: v is not None and v >= 1, 60)
        wait_for(base, 'up{job="interest-stream"}', lambda v: v == 0, 60)
        assert value(base, lag) == len(more)  # nobody consumed meanwhile
    finally:
        stack.worker.resume()

    stack.worker.wait_idle(consumed=stack.published + len(more), timeout=180)
    wait_for(base, lag, lambda v: v == 0, 180)
    wait_for(base, age, lambda v: v == 0, 60)
    wait_for(base, 'up{job="interest-stream"}', lambda v: v == 1, 60)
