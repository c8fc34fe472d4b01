"""Run `interest-stream up` as a child process and watch it through its HTTP endpoints.

Used by the demo, the benchmarks and the integration/reliability tests, which all talk
to the worker only as a user would: HTTP, the broker, and (once it stopped) Qdrant's
directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from streams.embedded import free_port


class WorkerProcess:
    def __init__(
        self,
        broker: str,
        data_dir: Path,
        *,
        partitions: int = 2,
        store: str = "rocksdb",
        env: dict[str, str] | None = None,
    ) -> None:
        self.broker = broker
        self.data_dir = Path(data_dir)
        self.partitions = partitions
        self.store = store
        self.env = env or {}
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir / "worker.log"

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

    def start(self, timeout: float = 90.0) -> WorkerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        log = self.log_path.open("ab")
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if self.health().get("recovered"):
                    return self
            except (OSError, urllib.error.URLError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not up within {timeout:.0f}s:\n{self.tail()}")

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

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
