"""docker-compose.yml, the Dockerfile and what they mount, checked without Docker: the
compose file against the Compose Specification's JSON schema (as vendored by the
check-jsonschema package), `docker compose config` where the plugin is installed, and
the wiring between services, files and ports. There is no Docker engine here, so the
stack itself is not started (the same wiring runs for real in test_monitoring.py)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from importlib.resources import files
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft202012Validator

from streams.config import Settings
from streams.embedded import DLQ_TOPIC, INPUT_TOPICS

ROOT = Path(__file__).parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES = COMPOSE["services"]
GRAFANA = ROOT / "monitoring" / "grafana"


def schema_errors(doc: dict) -> list[str]:
    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    validator = Draft202012Validator(json.loads(schema_file.read_text()))
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def test_compose_file_matches_the_compose_specification():
    assert schema_errors(COMPOSE) == []
    broken = copy.deepcopy(COMPOSE)  # the schema is not vacuous
    broken["services"]["worker"]["depends_on"]["topics"]["condition"] = "service_done"
    broken["services"]["kafka"]["ports"] = 9094
    assert len(schema_errors(broken)) == 2


def test_docker_compose_config_accepts_it():
    docker = shutil.which("docker")
    plugin = docker and subprocess.run([docker, "compose", "version"], capture_output=True)
    if not plugin or plugin.returncode != 0:
        pytest.skip("the docker compose plugin is not installed (the schema test still runs)")
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def bind_mounts(service: dict) -> dict[str, Path]:
    """Container path -> repository path of the service's ./ bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            out[target] = ROOT / source
    return out


def test_builds_and_bind_mounts_point_at_files_in_the_repository():
    named = set(COMPOSE.get("volumes", {}))
    for name, service in SERVICES.items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir() and (context / build["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in named, (name, volume)
        for target, path in bind_mounts(service).items():
            assert path.exists(), (name, target, path)


def test_the_dockerfile_copies_only_what_the_build_context_keeps():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    copies = re.findall(r"^COPY (?!--from)(.+) \S+$", (ROOT / "Dockerfile").read_text(), re.M)
    sources = [s.rstrip("/") for line in copies for s in line.split()]
    assert {"pyproject.toml", "README.md", "encoders", "streams"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists() and source not in ignored, source


def test_services_start_in_order_and_only_wait_for_what_can_say_it_is_ready():
    for name, service in SERVICES.items():
        deps = service.get("depends_on", {})
        for dep in deps:
            condition = deps[dep]["condition"] if isinstance(deps, dict) else "service_started"
            assert dep in SERVICES, (name, dep)
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dep], (name, dep)
    for name in ("worker", "lag-exporter"):
        deps = SERVICES[name]["depends_on"]
        assert deps["topics"]["condition"] == "service_completed_successfully"
        assert deps["kafka"]["condition"] == "service_healthy"
    assert SERVICES["topics"]["restart"] == "no"


def test_the_topics_service_creates_the_topics_the_workers_use():
    script = SERVICES["topics"]["command"][0]
    for topic in (*INPUT_TOPICS, DLQ_TOPIC):
        assert re.search(rf"(^|\s){re.escape(topic)}(\s|;|$)", script), topic
    default = f"${{INTEREST_PARTITIONS:-{Settings.model_fields['partitions'].default}}}"
    assert SERVICES["topics"]["environment"]["PARTITIONS"] == default
    assert SERVICES["worker"]["environment"]["INTEREST_PARTITIONS"] == default


def test_workers_scale_without_host_port_collisions():
    for mapping in SERVICES["worker"].get("ports", []):
        host_port = str(mapping).split(":")[-2]
        assert "-" in host_port, f"a fixed host port collides under --scale: {mapping}"
    assert "container_name" not in SERVICES["worker"]


def listening_port(service: str) -> int:
    s = SERVICES[service]
    if service == "worker":
        return int(s["environment"]["INTEREST_WEB_PORT"])
    command = s["command"]
    return int(command[command.index("--port") + 1])


def test_prometheus_scrapes_every_worker_replica_and_the_lag_exporter():
    mounts = bind_mounts(SERVICES["prometheus"])
    config_path = "/etc/prometheus/prometheus.yml"
    assert mounts[config_path] == ROOT / "monitoring" / "prometheus.yml"
    config = yaml.safe_load(mounts[config_path].read_text())
    for rules in config["rule_files"]:  # relative to the config file, mounted beside it
        assert f"/etc/prometheus/{rules}" in mounts
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (sd,) = jobs["interest-stream"]["dns_sd_configs"]
    assert (sd["names"], sd["type"], sd["port"]) == (["worker"], "A", listening_port("worker"))
    (static,) = jobs["interest-lag-exporter"]["static_configs"]
    host, port = static["targets"][0].split(":")
    assert host in SERVICES and int(port) == listening_port(host)
    assert SERVICES[host]["command"][SERVICES[host]["command"].index("--host") + 1] == "0.0.0.0"


def test_grafana_is_provisioned_with_the_prometheus_service_and_the_dashboard():
    mounts = bind_mounts(SERVICES["grafana"])
    assert mounts["/etc/grafana/provisioning"] == GRAFANA / "provisioning"
    (source,) = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090" and "prometheus" in SERVICES
    (provider,) = yaml.safe_load(
        (GRAFANA / "provisioning/dashboards/interest-stream.yml").read_text()
    )["providers"]
    dashboards = provider["options"]["path"]
    assert mounts[dashboards] == GRAFANA / "dashboards"
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / Path(home).relative_to(dashboards)).is_file()

    panels = json.loads((GRAFANA / "dashboards/interest-stream.json").read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:  # each panel queries the provisioned source (the exprs run in
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]  # test_monitoring)
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"] and target["expr"].strip()
