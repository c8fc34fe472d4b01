"""The Python steps of bench/gpu_run.sh, one subcommand each (run from the repository root).

python3 bench/gpu_steps.py provider [--dry]          onnxruntime offers CUDA
python3 bench/gpu_steps.py export fp32 fp16 [--models ...]   export what is missing
python3 bench/gpu_steps.py sessions {cuda,cpu}       fp16 sessions run on that provider
python3 bench/gpu_steps.py pytest JUNIT_XML          the gpu-marked tests
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELS = ("minilm-l6", "e5-small")
GPU_TESTS = (
    "tests/integration/test_bench_encode_gpu.py",
    "tests/integration/test_encoder_graph_pooling.py",
)


def preload() -> object:
    """onnxruntime, with the CUDA/cuDNN libraries of the nvidia-* wheels loaded (onnxruntime
    >= 1.21; the CUDA provider fails to initialise without them on the device)."""
    from encoders.runtime import import_onnxruntime

    ort = import_onnxruntime()
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    return ort


def provider(dry: bool) -> None:
    ort = preload()
    found = ort.get_available_providers()  # type: ignore[attr-defined]
    print(ort.__file__, ort.__version__, ort.get_device(), found)  # type: ignore[attr-defined]
    if "CUDAExecutionProvider" not in found and not dry:
        raise SystemExit("no CUDAExecutionProvider: is /tmp/ortgpu first on PYTHONPATH?")


def export(precisions: list[str], models: list[str]) -> None:
    from encoders.export import export_model
    from encoders.models import model_file, tokenizer_file

    for m in models:
        missing = [p for p in precisions if not model_file(m, p).exists()]  # type: ignore[arg-type]
        if not tokenizer_file(m).exists():
            missing = precisions
        if missing:
            t = time.perf_counter()
            export_model(m, missing)  # type: ignore[arg-type]
            print(f"exported {m} {missing} in {time.perf_counter() - t:.0f}s", flush=True)
        else:
            print(f"{m} {precisions}: already exported")


def sessions(device: str) -> None:
    import numpy as np

    from encoders.models import model_file
    from encoders.runtime import CPU, CUDA, SessionPlan, create_session

    preload()
    want = CUDA if device == "cuda" else CPU
    for m in MODELS:
        s = create_session(model_file(m, "fp16"), SessionPlan(want, "fp16"))
        ids = np.array([[0, 100, 200, 2]], dtype=np.int64)
        out = s.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        print(m, s.get_providers(), out.shape, out.dtype)
        if s.get_providers()[0] != want:
            raise SystemExit(f"{m}: session runs on {s.get_providers()[0]}, not {want}")


def run_pytest(junit: str) -> int:
    preload()  # before any session in the tests
    import pytest

    args = ["-m", "gpu", "-v", "-p", "no:cacheprovider", "--junitxml", junit, *GPU_TESTS]
    return int(pytest.main(args))


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("provider").add_argument("--dry", action="store_true")
    e = sub.add_parser("export")
    e.add_argument("precisions", nargs="+", choices=["fp32", "fp16", "int8"])
    e.add_argument("--models", nargs="+", default=list(MODELS))
    sub.add_parser("sessions").add_argument("device", choices=["cuda", "cpu"])
    sub.add_parser("pytest").add_argument("junit")
    args = p.parse_args()
    if args.cmd == "provider":
        provider(args.dry)
    elif args.cmd == "export":
        export(args.precisions, args.models)
    elif args.cmd == "sessions":
        sessions(args.device)
    else:
        sys.exit(run_pytest(args.junit))


if __name__ == "__main__":
    main()
