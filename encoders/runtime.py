"""ONNX Runtime sessions: which provider and precision, and how the session is tuned."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from encoders.models import Precision

log = logging.getLogger("encoders")

Device = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# fp16 halves memory traffic on a GPU but is emulated (slow) on most CPUs. On CPU the
# default is fp32, not the ~1.5x faster int8: dynamic int8 picks activation scales per
# batch, so a text's vectors would depend on what else shared its batch, and the worker
# after a restart, a replay, and the offline profile would disagree (cosine ~0.998).
# int8 stays available (`--precision int8`) where that does not matter.
DEFAULT_PRECISION: dict[str, Precision] = {CUDA: "fp16", CPU: "fp32"}


class EncoderRuntimeError(RuntimeError):
    """No usable ONNX Runtime, provider or model file."""


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise EncoderRuntimeError(
            "onnxruntime is not installed: pip install 'interest-stream[cpu]' "
            "(or 'interest-stream[gpu]' for CUDA)"
        ) from None
    return onnxruntime


@dataclass(frozen=True)
class SessionPlan:
    provider: str
    precision: Precision


def plan_session(
    available: list[str], device: Device = "auto", precision: Precision | None = None
) -> SessionPlan:
    """Pick provider and precision from what this onnxruntime build offers.

    >>> plan_session(["CUDAExecutionProvider", "CPUExecutionProvider"])
    SessionPlan(provider='CUDAExecutionProvider', precision='fp16')
    >>> plan_session(["CPUExecutionProvider"])
    SessionPlan(provider='CPUExecutionProvider', precision='fp32')
    >>> plan_session(["CUDAExecutionProvider", "CPUExecutionProvider"], "cpu", "int8")
    SessionPlan(provider='CPUExecutionProvider', precision='int8')
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" and CUDA not in available:
        raise EncoderRuntimeError(
            "device 'cuda' asked for, but this onnxruntime has no CUDAExecutionProvider "
            f"(it has {available}); install 'interest-stream[gpu]' on a machine with a GPU"
        )
    provider = CUDA if device != "cpu" and CUDA in available else CPU
    return SessionPlan(provider, precision or DEFAULT_PRECISION[provider])


def create_session(
    model: Path | bytes,
    plan: SessionPlan,
    threads: int = 0,
    *,
    exact_fp32: bool = False,
    spinning: bool = True,
) -> Any:
    """An InferenceSession on the planned provider, from a file or serialized bytes.

    threads=0 lets ORT use all cores. exact_fp32 turns CUDA's TF32 matmuls off (ORT turns
    them on by default on Ampere and later): the pooling sums must be float32 as on CPU.
    spinning=False parks idle CPU threads at once: a session that runs briefly between two
    runs of another must not keep its threads busy-waiting on the cores the other needs.
    """
    ort = import_onnxruntime()
    if not isinstance(model, bytes) and not Path(model).exists():
        raise EncoderRuntimeError(
            f"model file {model} is missing: run `interest-stream export-model "
            f"--model {Path(model).parent.name} --precision {plan.precision}`"
        )
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers: list[Any] = [CPU]
    if plan.provider == CUDA:
        cuda_opts = {
            "cudnn_conv_use_max_workspace": "1",
            "arena_extend_strategy": "kSameAsRequested",
            "do_copy_in_default_stream": "1",
        }
        if exact_fp32:
            cuda_opts["use_tf32"] = "0"
        providers = [(CUDA, cuda_opts), CPU]
        if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu >= 1.21
            # CUDA and cuDNN from the nvidia-* pip wheels, without LD_LIBRARY_PATH
            ort.preload_dlls()
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, sess_options=opts, providers=providers)
    got = session.get_providers()[0]
    if got != plan.provider:
        raise EncoderRuntimeError(f"{plan.provider} failed to initialise (session runs on {got})")
    return session
