"""`interest-stream eval` end to end: the conversion script, the real e5 encoder, real
MovieLens-100k (from the recbole wheel), the documented JSON. The full data set's figures
are in docs/evaluation.md; here the first 150 users keep it under a minute."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streams.evaluate import SYSTEMS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=ROOT)


def test_eval_on_movielens_beats_the_static_baseline_and_prints_the_documented_json(
    tmp_path, e5_exported
):
    log = tmp_path / "ml.jsonl.gz"
    conv = run(
        sys.executable, "scripts/movielens_replay.py", "--out", str(log), "--limit-users", "150"
    )
    assert conv.returncode == 0, conv.stderr
    assert "item 1,682" in conv.stdout

    cli = [
        sys.executable,
        "-m",
        "streams.cli",
        "eval",
        "--events",
        str(log),
        "--json",
        "--model",
        e5_exported,
        "--device",
        "cpu",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    res = run(*cli)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "encode:" in res.stderr and "tune:" in res.stderr  # progress bars
    out = json.loads(res.stdout)
    assert out["k"] == 10 and out["items"] == 1682
    assert 100 <= out["users"] <= 150
    assert set(out["metrics"]) == set(SYSTEMS)
    for m in out["metrics"].values():
        assert 0 <= m["ndcg_ci"][0] <= m["ndcg"] <= m["ndcg_ci"][1] <= 1
        assert 0 < m["coverage"] <= 1
    ours, static = out["metrics"]["ours"], out["metrics"]["no_decay"]
    assert ours["ndcg_ci"][0] > static["ndcg_ci"][1], (ours, static)
    cal = out["calibration"]
    assert cal["beta"] > 0 and 0 <= cal["ece"] < 0.2

    # the second run reads every encoding from the cache and gives the same figures
    again = run(*cli)
    assert again.returncode == 0
    assert "encode:" not in again.stderr  # no encoding progress bar
    assert json.loads(again.stdout)["metrics"] == out["metrics"]
