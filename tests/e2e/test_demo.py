"""`interest-stream demo` as the README runs it (after `make demo` has installed things)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SEED = "我爱看电影，特别喜欢科幻片和动作片。"


@pytest.mark.usefixtures("e5_exported")
def test_demo_prints_vectors_of_the_seed_sentence() -> None:
    exe = shutil.which("interest-stream") or str(Path(sys.executable).parent / "interest-stream")
    out = subprocess.run([exe, "demo"], capture_output=True, text=True, check=True, timeout=300)
    text = out.stdout
    assert "e5-small (int8) on CPUExecutionProvider" in text
    assert SEED in text
    words = re.search(r"words\s+(\d+) x 384\s+(.+)", text)
    assert words and int(words.group(1)) >= 4 and "电影" in words.group(2)
    assert re.search(r"sentences\s+1 x 384\s+norms \[\d+\.\d+\]", text)
    assert re.search(r"document\s+384\s+norm \d+\.\d+", text)
