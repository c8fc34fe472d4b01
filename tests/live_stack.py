"""A running broker and worker that tests feed events to and read from (the API and status
page tests): each send waits until the worker has consumed everything sent so far."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from streams.embedded import EmbeddedBroker
from streams.publish import json_records, send_records
from streams.supervisor import WorkerProcess


class Stack:
    def __init__(self, broker: EmbeddedBroker, worker: WorkerProcess) -> None:
        self.broker, self.worker = broker, worker
        self.sent = 0
        self.n = 0

    def send(self, records: list[tuple[str, str, dict[str, Any]]]) -> None:
        # a thread of its own: playwright's sync API keeps an event loop running in this one
        with ThreadPoolExecutor(1) as pool:
            pool.submit(
                asyncio.run, send_records(self.broker.bootstrap, json_records(records))
            ).result()
        self.sent += len(records)
        self.worker.wait_idle(consumed=self.sent)

    def clicks(self, user: str, items: list[str], rating: int | None = None) -> None:
        out = []
        for item in items:
            self.n += 1
            ev: dict[str, Any] = {
                "event_id": f"c{self.n}",
                "user_id": user,
                "item_id": item,
                "ts": time.time(),
            }
            if rating is not None:
                ev["rating"] = rating
            out.append(("events.click", user, ev))
        self.send(out)

    def recs(self, user: str, **params: Any) -> dict[str, Any]:
        q = "&".join(f"{k}={v}" for k, v in {"k": 10, **params}.items())
        status, doc = self.worker.get(f"/recommendations/{user}?{q}")
        assert status == 200, doc
        return doc  # type: ignore[no-any-return]
