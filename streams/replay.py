"""Replay files: JSON Lines (optionally gzip) of events, each with a `type` field."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from streams.events import Event, InvalidEvent, parse_event


@dataclass
class ReplayReport:
    """How a file read went: good events, and bad lines with their line numbers."""

    lines: int = 0
    events: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        return f"{self.lines} lines: {self.events} events, {len(self.bad)} bad lines skipped"


def _open(path: Path) -> IO[bytes]:
    with path.open("rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else path.open("rb")


def read_events(path: str | Path, report: ReplayReport | None = None) -> Iterator[Event]:
    """Yield valid events in file order; bad lines go into `report` (never raise on them).

    >>> import tempfile, os
    >>> p = Path(tempfile.mkdtemp()) / "e.jsonl"
    >>> _ = p.write_text('{"type": "delete", "user_id": "u1"}\\nnot json\\n\\n')
    >>> r = ReplayReport()
    >>> [e.type for e in read_events(p, r)], r.summary(), r.bad[0][0]
    (['delete'], '2 lines: 1 events, 1 bad lines skipped', 2)
    """
    report = report if report is not None else ReplayReport()
    with _open(Path(path)) as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            report.lines += 1
            try:
                event = parse_event(raw)
            except InvalidEvent as err:
                report.bad.append((n, err.reason))
                continue
            report.events += 1
            yield event
