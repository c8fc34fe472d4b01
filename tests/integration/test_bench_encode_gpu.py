"""bench/encode_gpu.py, the GPU benchmark of issue 10, checked before a device runs it.

`--device cpu --quick` takes every path the device run takes (two processes, batches from
token ids, IO binding, the pooling session, the Encoder end to end, the HF tokenizer, the
JSON and tables) except the CUDA-only lines: fp16 weights, OrtValues on the GPU and
nvidia-smi. nvidia-smi is checked here with a stand-in; the rest by the gpu-marked test,
which bench/gpu_run.sh runs on the device.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from encoders.models import get_spec, model_file
from encoders.runtime import CPU, CUDA, import_onnxruntime

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import encode_gpu  # noqa: E402

MODELS = ["minilm-l6", "e5-small"]


def run_bench(out: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "encode.py"), *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(out.read_text())


def check_shape(res: dict[str, Any], out: Path, device: str) -> None:
    batches = res["config"]["batches"]
    assert res["device"]["device"] == device
    assert set(res["systems"]) == set(MODELS)
    every = {(m, length, b) for m in MODELS for length in encode_gpu.LENGTHS for b in batches}
    for kind in ("ids", "e2e"):
        assert {(r["model"], r["length"], r["batch"]) for r in res[kind]} == every
        for r in res[kind]:
            for s in encode_gpu.SYSTEMS:
                assert r[s]["texts_per_s"] > 0
                assert r[s]["n_texts"] == r["n_texts"]
                assert len(r[s]["times"]) == (
                    res["config"]["repeat"] if kind == "ids" else res["config"]["repeat_e2e"]
                )
            assert r["ratio"] == pytest.approx(r["ours"]["texts_per_s"] / r["torch"]["texts_per_s"])
    for r in res["ids"]:
        lo, hi = encode_gpu.LENGTHS[r["length"]]
        assert lo <= r["tokens_mean"] <= hi
        assert r["n_texts"] == encode_gpu.n_ids(r["batch"], quick=True)
    for r in res["e2e"]:
        for s in encode_gpu.SYSTEMS:
            assert 0 < r[s]["tokenize_share"] < 1
    for m in MODELS:
        torch_info, ours = res["systems"][m]["torch"], res["systems"][m]["ours"]
        assert torch_info["attn_implementation"] == "sdpa"
        # the baseline really runs SDPA: one call per layer
        assert torch_info["sdpa_calls_per_forward"] == get_spec(m).num_layers
        assert torch_info["tokenizer"].startswith("transformers")
        want = CUDA if device == "cuda" else CPU
        assert ours["providers"][0] == ours["pool_providers"][0] == want
        assert ours["encoder_provider"] == want
    md = out.with_suffix(".md").read_text()
    assert res["device_line"] in md and "From token ids" in md and "End to end" in md


@pytest.mark.integration
def test_quick_cpu_run(e5_exported: str, minilm_exported: str, tmp_path: Path) -> None:
    out = tmp_path / "encode_gpu.json"
    res = run_bench(out, "--device", "cpu", "--quick", "--threads", "1")
    check_shape(res, out, "cpu")
    assert res["config"]["precision"] == "fp32" and res["targets"] == []
    for r in res["ids"]:
        # fp32 both sides: the same model, so the same sentence vectors
        assert r["min_cosine"] >= 0.999, r
        assert "gpu_mib" not in r["torch"] and "gpu_mib" not in r["ours"]
    for m in MODELS:
        assert all(v > 100 for v in res["peak_rss"][m].values())


def test_mean_pool_graph_matches_numpy(tmp_path: Path) -> None:
    import numpy as np

    from encoders.runtime import SessionPlan, create_session

    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((3, 5, 8)).astype(np.float16)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=np.int64)
    path = tmp_path / "mean_pool.onnx"
    path.write_bytes(encode_gpu.mean_pool_model("tensor(float16)"))
    sess = create_session(path, SessionPlan(CPU, "fp32"), threads=1)
    got = sess.run(None, {"hidden": hidden, "mask": mask})[0]
    h, m = hidden.astype(np.float32), mask[..., None].astype(np.float32)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, (h * m).sum(1) / m.sum(1), rtol=1e-6, atol=1e-6)


FAKE_SMI = """#!/bin/sh
case "$*" in
  *memory.used*) echo "1234" ;;
  *name,driver_version*) echo "NVIDIA H100 80GB HBM3, 580.82.07, 81559" ;;
  *) echo "| NVIDIA-SMI 580.82.07    Driver Version: 580.82.07    CUDA Version: 13.0 |" ;;
esac
"""


def test_device_line_and_memory_from_nvidia_smi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert encode_gpu.gpu_used_mib() == 1234.0
    info = encode_gpu.device_info("cuda")
    assert info["gpu"] == "NVIDIA H100 80GB HBM3" and info["driver"] == "580.82.07"
    assert info["cuda_driver"] == "13.0" and info["gpu_memory_mib"] == 81559.0
    line = encode_gpu.device_line({**info, "torch_cuda": "13.0"})
    assert line.startswith("GPU: NVIDIA H100 80GB HBM3 (81559 MiB), driver 580.82.07, CUDA 13.0")
    assert "torch built for CUDA 13.0" in line and "onnxruntime" in line and "cores" in line


def test_no_gpu_means_none_and_a_clear_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi on it
    assert encode_gpu.gpu_used_mib() is None
    if CUDA not in import_onnxruntime().get_available_providers():
        with pytest.raises(SystemExit, match="no CUDAExecutionProvider"):
            encode_gpu.require_cuda()


def _row(model: str, length: str, batch: int, torch_s: float, ours_s: float) -> dict[str, Any]:
    def side(v: float) -> dict[str, Any]:
        return {"texts_per_s": v, "gpu_mib": 900.0, "tokenize_share": 0.25}

    return {
        "model": model,
        "length": length,
        "batch": batch,
        "tokens_mean": 28.0,
        "torch": side(torch_s),
        "ours": side(ours_s),
        "ratio": ours_s / torch_s,
        "min_cosine": 0.9995,
    }


def test_targets_and_tables_for_a_cuda_run() -> None:
    rows = [
        _row("minilm-l6", "short", 1024, 165_000, 260_000),
        _row("minilm-l6", "short", 256, 36_000, 50_000),  # 1.39x < 1.5x
        _row("minilm-l6", "long", 1024, 68_000, 90_000),
        _row("minilm-l6", "short", 64, 9_000, 30_000),  # no target at batch 64
        _row("e5-small", "short", 1024, 72_000, 120_000),  # < 130k
    ]
    got = {t["target"]: t["met"] for t in encode_gpu.targets(rows)}
    assert got == {
        "minilm-l6 short b1024 ours texts/s": True,
        "minilm-l6 short b1024 ours/torch": True,
        "minilm-l6 short b256 ours/torch": False,
        "minilm-l6 long b1024 ours/torch": True,
        "e5-small short b1024 ours texts/s": False,
        "e5-small short b1024 ours/torch": True,
    }
    result = {
        "device": {"device": "cuda"},
        "device_line": "GPU: test",
        "ids": rows,
        "e2e": rows,
        "targets": encode_gpu.targets(rows),
    }
    text = encode_gpu.tables(result)
    assert "| minilm-l6 | short | 1024 | 28 | 165,000 | 260,000 | 1.58x | 900 / 900 |" in text
    assert "| 25% / 25% |" in text
    assert "| e5-small short b1024 ours texts/s | 120,000 | 130,000 | NO |" in text
    assert "| minilm-l6 short b256 ours/torch | 1.39 | 1.5 | NO |" in text


def cuda_missing() -> str | None:
    """Why the CUDA run cannot happen here, or None."""
    if CUDA not in import_onnxruntime().get_available_providers():
        return "needs onnxruntime-gpu (CUDAExecutionProvider); on a device: bench/gpu_run.sh"
    if shutil.which("nvidia-smi") is None:
        return "needs an NVIDIA GPU (no nvidia-smi)"
    try:
        import torch
    except ImportError:
        return "needs torch for the baseline"
    if not torch.cuda.is_available():
        return "needs a GPU that torch can use"
    return None


@pytest.mark.gpu
@pytest.mark.skipif(cuda_missing() is not None, reason=str(cuda_missing()))
def test_quick_cuda_run(tmp_path: Path) -> None:
    for m in MODELS:
        if not model_file(m, "fp16").exists():
            pytest.skip(f"no fp16 export of {m}: interest-stream export-model --model {m}")
    out = tmp_path / "encode_gpu.json"
    res = run_bench(out, "--device", "cuda", "--quick")
    check_shape(res, out, "cuda")
    assert res["device"]["gpu"] and res["device"]["driver"]
    assert "torch_cuda" in res["device"] and res["config"]["precision"] == "fp16"
    for m in MODELS:
        assert "float16" in res["systems"][m]["torch"]["system"]
    for r in res["ids"]:
        assert r["min_cosine"] >= 0.99, r  # fp16 on both sides, different kernels
        assert r["torch"]["gpu_mib"] > 0 and r["ours"]["gpu_mib"] > 0
        assert r["torch"]["max_allocated_mib"] > 0
