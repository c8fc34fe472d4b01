import pytest

from encoders.models import get_spec
from encoders.runtime import CPU, CUDA, EncoderRuntimeError, plan_session


def test_auto_prefers_cuda_fp16_and_falls_back_to_cpu_fp32() -> None:
    assert plan_session([CUDA, CPU]).provider == CUDA
    assert plan_session([CUDA, CPU]).precision == "fp16"
    assert plan_session([CPU]).provider == CPU
    assert plan_session([CPU]).precision == "fp32"


def test_explicit_cuda_without_provider_is_a_clear_error() -> None:
    with pytest.raises(EncoderRuntimeError, match="CUDAExecutionProvider"):
        plan_session([CPU], "cuda")


def test_bad_device_and_model_names() -> None:
    with pytest.raises(ValueError, match="device"):
        plan_session([CPU], "tpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown model"):
        get_spec("bert-huge")
