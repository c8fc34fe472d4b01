"""Shared fixtures. Exported models are built once (cached under onnx/) and reused."""

from __future__ import annotations

import pytest

from encoders.models import PRECISIONS, model_file, tokenizer_file


def ensure_exported(name: str) -> None:
    """Export `name` unless every precision and its tokenizer already exist (first run ~1 min)."""
    if tokenizer_file(name).exists() and all(model_file(name, p).exists() for p in PRECISIONS):
        return
    from encoders.export import export_model

    export_model(name)


@pytest.fixture(scope="session")
def e5_exported() -> str:
    ensure_exported("e5-small")
    return "e5-small"


@pytest.fixture(scope="session")
def minilm_exported() -> str:
    ensure_exported("minilm-l6")
    return "minilm-l6"
