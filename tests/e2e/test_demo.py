"""`interest-stream demo` as the README runs it (after `make demo` has installed things):
embedded broker, worker, sample replay, users' terms and recommendations, clean stop."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.usefixtures("e5_exported")
def test_demo_replays_the_sample_and_prints_recommendations(tmp_path) -> None:
    exe = shutil.which("interest-stream") or str(Path(sys.executable).parent / "interest-stream")
    out = subprocess.run(
        [exe, "demo", "--data-dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    text = out.stdout
    assert "encoder e5-small (fp32) on CPUExecutionProvider" in text
    published = sum(  # the items first, then the events
        int(n.replace(",", "")) for n in re.findall(r"published ([\d,]+) messages", text)
    )
    totals = re.search(r"worker totals: consumed ([\d,]+), applied ([\d,]+)", text)
    assert totals and int(totals.group(1).replace(",", "")) == published > 3000
    assert "dead_lettered 0" in text and "deletes 1" in text
    # u2 searched for 霸王别姬 (Farewell My Concubine) and rated dramas
    u2 = text.split("\nu2:\n")[1].split("\n\n")[0]
    assert "drama" in u2.split("top terms:")[1].split("\n")[0]
    assert len(re.findall(r"^    \d\.\d{3}  p 0\.\d{3}  \S", u2, flags=re.M)) == 5
    # u999 asked to be deleted after three events
    assert "u999:\n  no vectors" in text
    assert re.search(r"done in \d+ s", text)
