"""Every PromQL expression of the dashboard and the alert rules, run by a real Prometheus
(Debian package) that scrapes a real worker while events are replayed."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from streams.embedded import EmbeddedBroker, ensure_topics, free_port
from streams.publish import json_records, send_records
from streams.supervisor import WorkerProcess

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


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, e5_exported):
    exe = shutil.which("prometheus")
    if exe is None:
        pytest.fail(
            "Debian prometheus is not installed: apt-get install -y prometheus (make test does)"
        )
    tmp = tmp_path_factory.mktemp("monitoring")
    with EmbeddedBroker(log_path=tmp / "tansu.log") as broker:
        ensure_topics(broker.bootstrap, 2)
        worker = WorkerProcess(broker.bootstrap, tmp / "data").start()
        config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["rule_files"] = [str(MONITORING / "alerts.yml")]
        config["scrape_configs"][0]["static_configs"] = [
            {"targets": [worker.url.removeprefix("http://")]}
        ]
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp / "prometheus.log").open("wb")
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
        try:
            records = [
                ("items", "m1", {"item_id": "m1", "title": "Space opera", "body": "Starships."}),
                ("items", "m2", {"item_id": "m2", "title": "Bread", "body": "Sourdough."}),
            ]
            for i in range(30):
                user = f"u{i % 5}"
                ev = {"event_id": f"e{i}", "user_id": user, "item_id": f"m{1 + i % 2}"}
                records.append(("events.click", user, {**ev, "ts": time.time()}))
            raw = json_records(records)
            asyncio.run(send_records(broker.bootstrap, raw))
            worker.wait_idle(consumed=len(raw))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # scraped at least once before the bad one
                try:
                    up = query(base, 'up{job="interest-stream"} == 1')["data"]["result"]
                    if up and query(base, "interest_events_consumed_total")["data"]["result"]:
                        break
                except OSError:
                    pass
                time.sleep(0.5)
            # a broken message after that first scrape, so its counter visibly increases
            asyncio.run(send_records(broker.bootstrap, [("events.click", b"u1", b"{broken")]))
            worker.wait_idle(consumed=len(raw) + 1)
            time.sleep(4)
            yield base
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            worker.stop()


@pytest.mark.parametrize("expr", dashboard_exprs())
def test_every_dashboard_expression_returns_data(prometheus, expr):
    doc = query(prometheus, expr)
    assert doc["status"] == "success", doc
    assert doc["data"]["result"], f"no data for {expr}"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_expression_runs_and_the_dead_letter_alert_sees_data(prometheus, rule):
    doc = query(prometheus, rule["expr"])
    assert doc["status"] == "success", doc
    if rule["alert"] == "DeadLetters":  # the replay contained one broken message
        assert doc["data"]["result"], doc
    with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=10) as r:
        loaded = {x["name"] for g in json.loads(r.read())["data"]["groups"] for x in g["rules"]}
    assert rule["alert"] in loaded  # Prometheus parsed and loaded the rule file
