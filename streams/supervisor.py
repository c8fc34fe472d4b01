"""Run `interest-stream up` (and the lag exporter) as child processes and watch them
through their HTTP endpoints.

Used by the demo, the benchmarks and the integration/reliability tests, which all talk
to the worker only as a user would: HTTP, the broker, and (once it stopped) Qdrant's
directory.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

from streams.embedded import free_port


class ChildProcess:
    """A child process with its output in `log_path`, up once `ready()` says so."""

    name = "child"

    def __init__(self, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = Path(log_path)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self, timeout: float = 90.0) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                if self.ready():
                    return self
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not up within {timeout:.0f}s:\n{self.tail()}")

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: the process stops consuming, heartbeating and answering."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


class WorkerProcess(ChildProcess):
    name = "worker"

    def __init__(
        self,
        broker: str,
        data_dir: Path,
        *,
        partitions: int = 2,
        store: str = "rocksdb",
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(Path(data_dir) / "worker.log", env)
        self.broker = broker
        self.data_dir = Path(data_dir)
        self.partitions = partitions
        self.store = store
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The child's command line (a subclass may run another worker the same way)."""
        return [sys.executable, "-m", "streams.cli", "up", *self.options()]

    def options(self) -> list[str]:
        return [
            "--broker",
            self.broker,
            "--data-dir",
            str(self.data_dir),
            "--web-port",
            str(self.port),
            "--partitions",
            str(self.partitions),
            "--store",
            self.store,
        ]

    def ready(self) -> bool:
        return bool(self.health().get("recovered"))

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def health(self) -> dict[str, Any]:
        return self.get("/healthz")[1]

    def wait_idle(self, consumed: int, timeout: float = 120.0) -> dict[str, Any]:
        """Until `consumed` messages were handled, nothing is parked and Qdrant is written."""
        deadline = time.monotonic() + timeout
        h: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            h = self.health()
            if (
                h["totals"].get("consumed", 0) >= consumed
                and h["parked_users"] == 0
                and h["qdrant"]["pending"] == 0
            ):
                return h
            time.sleep(0.2)
        raise TimeoutError(f"worker not idle after {timeout:.0f}s: {h}\n{self.tail()}")


class QdrantStoreLock:
    """A Qdrant outage for a worker in local mode, from outside its process: an exclusive
    sqlite lock on every collection's storage under `qdrant_dir`, held until `release()`.

    Meanwhile the worker's writes fail for real (qdrant-client's sqlite waits out its 5 s
    busy timeout, then raises "database is locked"; nothing is applied in memory before it
    is stored), while its reads, served from memory, go on. A context manager.
    """

    def __init__(self, qdrant_dir: Path, timeout: float = 60.0) -> None:
        self.paths = sorted(Path(qdrant_dir).glob("collection/*/storage.sqlite"))
        if not self.paths:
            raise FileNotFoundError(f"no Qdrant local-mode collections under {qdrant_dir}")
        self.timeout = timeout
        self._conns: list[sqlite3.Connection] = []

    def acquire(self) -> Self:
        try:
            for path in self.paths:
                conn = sqlite3.connect(path, timeout=self.timeout, isolation_level=None)
                self._conns.append(conn)
                conn.execute("BEGIN EXCLUSIVE")  # waits for a write in progress
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        for conn in self._conns:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
        self._conns = []

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class S3ServerProcess(ChildProcess):
    """`moto_server` (from the dev extra's `moto[server]`): S3-compatible storage in memory on
    127.0.0.1, for an embedded broker whose log must outlive the broker process (Tansu's
    `s3://BUCKET/` storage engine, DESIGN.md section 9). The data lives as long as this
    process does."""

    name = "moto_server"

    def __init__(self, log_path: Path, *, port: int | None = None) -> None:
        super().__init__(log_path)
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        exe = Path(sys.executable).with_name("moto_server")  # the venv's, when run from one
        cmd = str(exe) if exe.exists() else "moto_server"
        return [cmd, "-H", "127.0.0.1", "-p", str(self.port)]

    def ready(self) -> bool:
        with urllib.request.urlopen(self.url + "/", timeout=5) as r:  # ListBuckets
            return r.status == 200

    def create_bucket(self, name: str) -> str:
        """Create `name` (idempotent); returns Tansu's storage URL for it."""
        req = urllib.request.Request(f"{self.url}/{name}", method="PUT")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
        return f"s3://{name}/"

    def client_env(self) -> dict[str, str]:
        """What an S3 client (Tansu) needs to use this server: endpoint, plain HTTP, and
        credentials (moto accepts any)."""
        return {
            "AWS_ENDPOINT": self.url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }


class LagExporterProcess(ChildProcess):
    """`streams.lag_exporter` as a child process, up once its /metrics answers."""

    name = "lag exporter"

    def __init__(
        self,
        broker: str,
        group: str,
        log_path: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        interval_s: float = 5.0,
    ) -> None:
        super().__init__(log_path)
        self.broker, self.group, self.host = broker, group, host
        self.port = port or free_port()
        self.interval_s = interval_s

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            *(sys.executable, "-m", "streams.lag_exporter"),
            *("--broker", self.broker, "--group", self.group),
            *("--host", self.host, "--port", str(self.port)),
            *("--interval", str(self.interval_s)),
        ]

    def ready(self) -> bool:
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            return r.status == 200
