"""Encoder throughput on a GPU (issue 10): PyTorch fp16 eager (SDPA) vs our ONNX Runtime CUDA fp16.

    .venv/bin/python bench/encode.py --device cuda [--models minilm-l6 e5-small] [--json PATH]
    .venv/bin/python bench/encode.py --device cpu --quick   # the same harness on CPU, seconds

Side by side in one run, per model x {short: 24-32 tokens, long: 112-128 tokens} x batch
{64, 256, 1024}, the same texts and the same weights (specials and the e5 prefix counted):

  from token ids  texts tokenized once up front (the model's tokenizer.json) and cut into
                  length-bucketed batches of B (encoders.batching, as encode() does): host
                  int64 arrays. A pass over N texts, per batch: copy ids and mask to the
                  device once, forward, masked mean over the tokens in float32 on the device,
                  copy the [B, 384] float32 sentence vectors to the host. Nothing else comes back.
      torch       transformers BertModel in fp16, attn_implementation="sdpa", eager (no
                  compile), torch.inference_mode(): the baseline most users would write
      ours        the fused fp16 ONNX file (onnx/<model>/model_fp16.onnx) in a session from
                  encoders.runtime.create_session; IO binding: ids and mask become OrtValues on
                  the device, bound to the model session and to a small mean-pooling session
                  that takes the token vectors where they were computed
  end to end      from strings, tokenization included. ours: encoders.Encoder(...).encode() on
                  chunks of B texts, the product (word, sentence and document vectors). torch:
                  a Hugging Face tokenizer over the same tokenizer.json (padding=True,
                  truncation=True, return_tensors="pt"), then the forward and pooling above.
                  Reported with the share of wall time spent tokenizing.

Timing: one warm-up pass, then the median of --repeat passes; each batch ends with the host
copy of its pooled vectors, so a pass is complete (synchronized) when it returns.
texts/s = N / median pass. GPU memory: each system runs in a process of its own;
`nvidia-smi --query-gpu=memory.used` minus the reading taken before that process started is
everything it holds (CUDA context, cuBLAS/cuDNN workspaces, torch's caching allocator or
ORT's arena), read after each configuration. Configurations run in ascending tokens per
batch and neither allocator hands memory back, so each reading is that process's peak so
far. torch also reports torch.cuda.max_memory_allocated per configuration. On CPU
(--device cpu) torch runs fp32, ours the fp32 file, and memory is the peak RSS instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

SYSTEMS = ("torch", "ours")
LENGTHS = {"short": (24, 32), "long": (112, 128)}  # tokens per text, specials included
BATCHES = (64, 256, 1024)
QUICK_BATCHES = (2, 4)
COSINE_ROWS = 256  # sentence vectors compared between the two systems, per length
# issue 10: ours, short texts, batch 1024, from token ids (texts/s) ...
TARGET_TEXTS_PER_S = {"minilm-l6": 250_000, "e5-small": 130_000}
# ... and ours / torch from token ids at these batch sizes
TARGET_RATIO = {"short": 1.5, "long": 1.3}
TARGET_RATIO_BATCHES = (256, 1024)

Batch = tuple[list[int], np.ndarray, np.ndarray]  # text indexes, ids, mask


# ---------------------------------------------------------------- texts and batches


def texts_for(model: str, n: int, length: str, seed: int = 11) -> list[str]:
    """n texts of `length` ("short"/"long") tokens for `model`: the workload's mixed
    Chinese/English texts, joined until they land in the range (counted exactly)."""
    from tokenizers import Tokenizer
    from workload import short_texts

    from encoders.models import get_spec, tokenizer_file

    lo, hi = LENGTHS[length]
    tok = Tokenizer.from_file(str(tokenizer_file(model)))
    prefix = get_spec(model).prefix("passage")
    pool = short_texts(min(max(2 * n, 400), 12_000), seed=seed)
    base = len(tok.encode(prefix).ids)  # specials and prefix, counted once per text
    inner = [len(e.ids) - base for e in tok.encode_batch([prefix + t for t in pool])]
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        candidates = []
        for _ in range(2 * (n - len(out)) + 16):
            parts, est = [], base
            while est < lo:
                j = rng.randrange(len(pool))
                parts.append(pool[j])
                est += inner[j]
            if est <= hi:
                candidates.append(" ".join(parts))
        counts = [len(e.ids) for e in tok.encode_batch([prefix + t for t in candidates])]
        out.extend(t for t, c in zip(candidates, counts, strict=True) if lo <= c <= hi)
    return out[:n]


def token_ids(model: str, texts: Sequence[str]) -> tuple[list[list[int]], int]:
    """Each text's ids (specials and the e5 prefix included; no truncation needed, the
    texts are at most 128 tokens) and the pad id."""
    from tokenizers import Tokenizer

    from encoders.models import get_spec, tokenizer_file

    spec = get_spec(model)
    tok = Tokenizer.from_file(str(tokenizer_file(model)))
    tok.no_truncation()
    tok.no_padding()
    ids = [e.ids for e in tok.encode_batch([spec.prefix("passage") + t for t in texts])]
    if max(map(len, ids)) > spec.max_length:
        raise ValueError(f"a text has more than {spec.max_length} tokens")
    return ids, tok.token_to_id(spec.pad_token)


def id_batches(ids: Sequence[list[int]], pad: int, batch: int) -> list[Batch]:
    """Host batches of at most `batch` rows, length-bucketed as encode() forms them."""
    from encoders.batching import length_buckets

    lengths = [len(x) for x in ids]
    out = []
    for idx in length_buckets(lengths, batch, batch * max(lengths)):
        width = max(lengths[i] for i in idx)
        arr = np.full((len(idx), width), pad, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        for row, i in enumerate(idx):
            arr[row, : lengths[i]] = ids[i]
            mask[row, : lengths[i]] = 1
        out.append((idx, arr, mask))
    return out


def n_ids(batch: int, quick: bool) -> int:
    """Texts per pass from token ids: at least 16 batches, at least 4,096 texts."""
    return 2 * batch if quick else max(4096, 16 * batch)


def median_pass(fn: Callable[[], Any], repeat: int) -> tuple[float, list[float]]:
    fn()  # warm-up: every batch shape once (cuBLAS/cuDNN plans, ORT arena, allocator)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


# ---------------------------------------------------------------- memory


def gpu_used_mib() -> float | None:
    """Device-wide used memory from nvidia-smi (None without one). We are alone on the GPU."""
    index = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
    if not index.isdigit():
        index = "0"
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", index],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    try:
        return float(proc.stdout.strip().splitlines()[0])
    except (IndexError, ValueError):
        return None


def peak_rss_mib() -> float:
    """This process's peak RSS. Not ru_maxrss: Linux carries that across exec, so a child
    would report at least its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- the two systems


class TorchSystem:
    """transformers BertModel, fp16 on CUDA (fp32 on CPU), SDPA attention, eager."""

    def __init__(self, model: str, device: str, threads: int) -> None:
        import torch

        from encoders.export import SOURCES
        from encoders.models import get_spec

        self.torch, self.spec = torch, get_spec(model)
        if device == "cpu":
            torch.set_num_threads(threads or os.cpu_count() or 1)
        bert, _ = SOURCES[model]()
        attn = _use_sdpa(bert)
        self.dev = torch.device(device)
        dtype = torch.float16 if device == "cuda" else torch.float32
        self.bert = bert.to(device=self.dev, dtype=dtype).eval()
        self.tokenizer_kind, self.tokenize = _hf_tokenizer(model)
        self.info: dict[str, Any] = {
            "system": f"torch {torch.__version__} {str(dtype).removeprefix('torch.')} eager",
            "attn_implementation": attn,
            "sdpa_calls_per_forward": self._count_sdpa(),
            "tokenizer": self.tokenizer_kind,
        }
        if device == "cuda":
            self.info["torch_cuda"] = torch.version.cuda
            self.info["gpu"] = torch.cuda.get_device_name(0)

    def _count_sdpa(self) -> int:
        """Calls to F.scaled_dot_product_attention in one forward: the layers, if SDPA runs."""
        import torch.nn.functional as F

        real, calls = F.scaled_dot_product_attention, [0]

        def counting(*a: Any, **k: Any) -> Any:
            calls[0] += 1
            return real(*a, **k)

        F.scaled_dot_product_attention = counting
        try:
            ids = np.array([[1, 2, 3, 4], [1, 2, 3, 0]], dtype=np.int64)
            self.forward(ids, (ids > 0).astype(np.int64))
        finally:
            F.scaled_dot_product_attention = real
        return calls[0]

    def _pooled(self, ids: Any, mask: Any) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            ids, mask = ids.to(self.dev), mask.to(self.dev)
            h = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            w = mask.unsqueeze(-1).to(h.dtype)
            summed = (h * w).sum(1, dtype=torch.float32)
            pooled = summed / mask.sum(1, keepdim=True).to(torch.float32)
            return pooled.cpu().numpy()

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._pooled(self.torch.from_numpy(ids), self.torch.from_numpy(mask))

    def end_to_end(self, texts: Sequence[str], batch: int) -> float:
        """One pass from strings; returns the seconds spent tokenizing."""
        prefix, spent = self.spec.prefix("passage"), 0.0
        for k in range(0, len(texts), batch):
            t = time.perf_counter()
            ids, mask = self.tokenize([prefix + s for s in texts[k : k + batch]])
            spent += time.perf_counter() - t
            self._pooled(ids, mask)
        return spent

    def memory(self) -> dict[str, float]:
        if self.dev.type != "cuda":
            return {}
        cuda = self.torch.cuda
        out = {"max_allocated_mib": cuda.max_memory_allocated() / 2**20}
        out["max_reserved_mib"] = cuda.max_memory_reserved() / 2**20
        cuda.reset_peak_memory_stats()
        return out


def _use_sdpa(bert: Any) -> str:
    """The export loads eager attention (for ORT's fusion); the baseline gets SDPA, as
    transformers picks for a loaded model."""
    try:
        bert.set_attn_implementation("sdpa")
    except (AttributeError, ValueError, TypeError):
        bert.config._attn_implementation = "sdpa"
    return str(bert.config._attn_implementation)


def _hf_tokenizer(model: str) -> tuple[str, Callable[[list[str]], tuple[Any, Any]]]:
    """What most users write: a transformers fast tokenizer, padding to the batch's longest.
    Falls back to the `tokenizers` library itself where transformers will not wrap it."""
    import torch
    from tokenizers import Tokenizer

    from encoders.models import get_spec, tokenizer_file

    spec = get_spec(model)
    tok = Tokenizer.from_file(str(tokenizer_file(model)))
    try:
        from transformers import PreTrainedTokenizerFast

        hf = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            pad_token=spec.pad_token,
            cls_token=spec.cls_token,
            sep_token=spec.sep_token,
            unk_token=spec.unk_token,
            model_max_length=spec.max_length,
        )

        def call(texts: list[str]) -> tuple[Any, Any]:
            enc = hf(texts, padding=True, truncation=True, return_tensors="pt")
            return enc["input_ids"], enc["attention_mask"]

        probe = ["The stock market fell.", "电影很好看"]
        ids, _ = call(probe)
        raw = Tokenizer.from_file(str(tokenizer_file(model))).encode(probe[0]).ids
        if ids[0, : len(raw)].tolist() != raw:
            raise ValueError(f"ids differ from the tokenizer's: {ids[0].tolist()} vs {raw}")
        return f"transformers {type(hf).__name__}", call
    except Exception as err:  # transformers missing or wrapping differently: plain tokenizers
        fallback = f"tokenizers.Tokenizer (transformers: {type(err).__name__}: {err})"
    tok.no_truncation()
    tok.enable_truncation(spec.max_length)
    tok.enable_padding(pad_id=tok.token_to_id(spec.pad_token), pad_token=spec.pad_token)

    def plain(texts: list[str]) -> tuple[Any, Any]:
        encs = tok.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encs], dtype=torch.int64)
        return ids, torch.tensor([e.attention_mask for e in encs], dtype=torch.int64)

    return fallback, plain


class OrtSystem:
    """Our ONNX Runtime session with IO binding, plus a mean-pooling session on the device."""

    def __init__(self, model: str, device: str, threads: int) -> None:
        from encoders.models import model_file
        from encoders.runtime import CPU, CUDA, SessionPlan, create_session, import_onnxruntime

        self.ort = ort = import_onnxruntime()
        self.model, self.device, self.threads = model, device, threads
        self._encoder: Any = None
        self.precision = "fp16" if device == "cuda" else "fp32"
        self.plan = SessionPlan(CUDA if device == "cuda" else CPU, self.precision)  # type: ignore[arg-type]
        self.session = create_session(model_file(model, self.precision), self.plan, threads)
        hidden = next(o for o in self.session.get_outputs() if o.name == "last_hidden_state")
        self.pool = create_session(mean_pool_model(hidden.type), self.plan, threads)
        self.info: dict[str, Any] = {
            "system": f"onnxruntime {ort.__version__} {self.precision}, IO binding",
            "model_file": model_file(model, self.precision).name,
            "providers": self.session.get_providers(),
            "pool_providers": self.pool.get_providers(),
            "hidden_type": hidden.type,
        }
        if self.session.get_providers()[0] != self.plan.provider:
            raise RuntimeError(f"session runs on {self.session.get_providers()}")

    def forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        ort, dev = self.ort, self.device
        ids_v = ort.OrtValue.ortvalue_from_numpy(ids, dev, 0)  # host -> device, once
        mask_v = ort.OrtValue.ortvalue_from_numpy(mask, dev, 0)
        run = self.session.io_binding()
        run.bind_ortvalue_input("input_ids", ids_v)
        run.bind_ortvalue_input("attention_mask", mask_v)
        run.bind_output("last_hidden_state", dev)
        self.session.run_with_iobinding(run)
        pool = self.pool.io_binding()
        pool.bind_ortvalue_input("hidden", run.get_outputs()[0])  # stays on the device
        pool.bind_ortvalue_input("mask", mask_v)
        pool.bind_output("sentence", dev)
        self.pool.run_with_iobinding(pool)
        return pool.copy_outputs_to_cpu()[0]

    def encoder(self, batch: int) -> Any:
        """The product's Encoder, bounded to one forward pass per `batch` texts (one Encoder,
        its public max_batch / max_batch_tokens set per configuration)."""
        from encoders import Encoder
        from encoders.models import get_spec

        if self._encoder is None:
            enc = Encoder(
                self.model,
                device=self.device,  # type: ignore[arg-type]
                precision=self.precision,  # type: ignore[arg-type]
                threads=self.threads,
            )
            self.info["encoder_provider"] = enc.provider
            self._encoder = _timed_prepare(enc)
        enc = self._encoder
        enc.max_batch = batch
        enc.max_batch_tokens = batch * get_spec(self.model).max_length
        return enc

    def end_to_end(self, texts: Sequence[str], batch: int) -> float:
        """One pass from strings through Encoder.encode() on chunks of `batch` texts;
        returns the seconds spent in Encoder._prepare (sentence split, tokenization, word
        merging: everything before the first forward pass)."""
        enc = self.encoder(batch)
        before = enc._bench_prepare_s
        for k in range(0, len(texts), batch):
            enc.encode(texts[k : k + batch])
        return float(enc._bench_prepare_s - before)

    def memory(self) -> dict[str, float]:
        return {}


def _timed_prepare(enc: Any) -> Any:
    """Wrap Encoder._prepare to add up its time in enc._bench_prepare_s (stays 0.0, and the
    share reads 0%, should a later Encoder tokenize elsewhere)."""
    enc._bench_prepare_s = 0.0
    inner = getattr(enc, "_prepare", None)
    if inner is None:
        return enc

    def timed(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            enc._bench_prepare_s += time.perf_counter() - t

    enc._prepare = timed
    return enc


def mean_pool_model(hidden_type: str) -> bytes:
    """ONNX graph: hidden [b, s, d] (float or float16), mask [b, s] int64 -> sentence [b, d]
    float32, the masked mean over tokens, summed in float32."""
    import onnx
    from onnx import TensorProto, helper

    floaty = TensorProto.FLOAT16 if "float16" in hidden_type else TensorProto.FLOAT
    nodes = [
        helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "axis2"], ["m3"]),
        helper.make_node("Cast", ["hidden"], ["h"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["h", "m3"], ["hm"]),
        helper.make_node("ReduceSum", ["hm", "axis1"], ["num"], keepdims=0),
        helper.make_node("ReduceSum", ["m3", "axis1"], ["den"], keepdims=0),
        helper.make_node("Div", ["num", "den"], ["sentence"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mean_pool",
        [
            helper.make_tensor_value_info("hidden", floaty, ["batch", "sequence", "dim"]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "sequence"]),
        ],
        [helper.make_tensor_value_info("sentence", TensorProto.FLOAT, ["batch", "dim"])],
        initializer=[
            helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
            helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


# ---------------------------------------------------------------- child process


def child(system: str, plan_path: Path, result_path: Path) -> None:
    """Run one system on one model over every configuration; write its results as JSON."""
    plan = json.loads(plan_path.read_text())
    model, device, threads = plan["model"], plan["device"], plan["threads"]
    base_mib = plan["gpu_base_mib"]
    sys_ = (TorchSystem if system == "torch" else OrtSystem)(model, device, threads)
    result: dict[str, Any] = {"info": sys_.info, "ids": [], "e2e": []}
    configs = sorted(
        ((length, b) for length in plan["texts"] for b in plan["batches"]),
        key=lambda c: (c[1] * LENGTHS[c[0]][1], LENGTHS[c[0]][1]),
    )
    encoded = {length: token_ids(model, texts) for length, texts in plan["texts"].items()}
    for length, batch in configs:
        all_ids, pad = encoded[length]
        texts = plan["texts"][length][: n_ids(batch, plan["quick"])]
        batches = id_batches(all_ids[: len(texts)], pad, batch)
        vectors: list[tuple[list[int], np.ndarray]] = []

        def one_pass(keep: list | None = None, batches: list[Batch] = batches) -> None:
            for idx, ids, mask in batches:
                out = sys_.forward(ids, mask)
                if keep is not None:
                    keep.append((idx, out))

        one_pass(vectors)  # kept for the cosine between the systems; not timed
        seconds, times = median_pass(one_pass, plan["repeat"])
        row: dict[str, Any] = {
            "length": length,
            "batch": batch,
            "n_texts": len(texts),
            "batches": len(batches),
            "tokens_mean": round(sum(int(m.sum()) for _, _, m in batches) / len(texts), 1),
            "seconds": seconds,
            "times": times,
            "texts_per_s": len(texts) / seconds,
            **sys_.memory(),
        }
        used = gpu_used_mib()
        if used is not None and base_mib is not None:
            row["gpu_mib"] = used - base_mib
        result["ids"].append(row)
        if batch == min(plan["batches"]):
            _save_vectors(vectors, len(texts), Path(plan["vectors_dir"]) / f"{system}-{length}.npy")
    result["peak_rss_mib_ids"] = peak_rss_mib()

    for length, batch in configs:
        texts = plan["texts"][length][: plan["n_e2e"]]
        spent = [0.0]

        def e2e_pass(texts: list[str] = texts, batch: int = batch, spent: list = spent) -> None:
            spent[0] += sys_.end_to_end(texts, batch)

        if isinstance(sys_, OrtSystem):
            sys_.encoder(batch)  # sessions created, batch bound set, outside the timed passes
        t0 = time.perf_counter()
        seconds, times = median_pass(e2e_pass, plan["repeat_e2e"])
        wall = time.perf_counter() - t0
        result["e2e"].append(
            {
                "length": length,
                "batch": batch,
                "n_texts": len(texts),
                "seconds": seconds,
                "times": times,
                "texts_per_s": len(texts) / seconds,
                # over every pass, the warm-up included
                "tokenize_share": spent[0] / wall,
            }
        )
    result["peak_rss_mib"] = peak_rss_mib()
    result_path.write_text(json.dumps(result, indent=2))


def _save_vectors(chunks: list[tuple[list[int], np.ndarray]], n: int, path: Path) -> None:
    """Pooled vectors of one pass, back in text order; the first COSINE_ROWS rows."""
    out = np.zeros((n, chunks[0][1].shape[1]), dtype=np.float32)
    for idx, vecs in chunks:
        out[idx] = vecs
    np.save(path, out[:COSINE_ROWS])


# ---------------------------------------------------------------- parent


def require_cuda() -> None:
    """Fail before any work when this machine cannot run the CUDA benchmark."""
    from encoders.runtime import CUDA, import_onnxruntime

    ort = import_onnxruntime()
    if CUDA not in ort.get_available_providers():
        raise SystemExit(
            f"onnxruntime {ort.__version__} ({ort.__file__}) has no CUDAExecutionProvider: "
            "install onnxruntime-gpu (on the device: PYTHONPATH=/tmp/ortgpu, bench/gpu_run.sh)"
        )
    if gpu_used_mib() is None:
        raise SystemExit("nvidia-smi does not answer: no NVIDIA GPU or driver here")


def device_info(device: str) -> dict[str, Any]:
    from machine import machine_info

    info: dict[str, Any] = {"device": device, **machine_info()}
    info["onnxruntime"] = _dist_version("onnxruntime-gpu", "onnxruntime")
    info["torch"] = _dist_version("torch")
    if device == "cuda":
        q = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.splitlines()[0]
        name, driver, total = (s.strip() for s in q.split(","))
        head = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        cuda = re.search(r"CUDA Version:\s*([\d.]+)", head)
        info.update(gpu=name, driver=driver, gpu_memory_mib=float(total))
        info["cuda_driver"] = cuda.group(1) if cuda else "?"
    return info


def _dist_version(*dists: str) -> str:
    for d in dists:
        try:
            return f"{d} {metadata.version(d)}"
        except metadata.PackageNotFoundError:
            continue
    return f"{dists[0]} not installed"


def device_line(info: dict[str, Any]) -> str:
    cpu = f"{info['cpu']}, {info['cores']} cores, Python {info['python']}"
    soft = f"{info['torch']}, {info['onnxruntime']}"
    if info["device"] != "cuda":
        return f"CPU: {cpu}; {soft}"
    torch_cuda = f", torch built for CUDA {info['torch_cuda']}" if info.get("torch_cuda") else ""
    return (
        f"GPU: {info['gpu']} ({info['gpu_memory_mib']:.0f} MiB), driver {info['driver']}, "
        f"CUDA {info['cuda_driver']} (driver){torch_cuda}; {soft}; CPU: {cpu}"
    )


def run_child(system: str, plan: dict[str, Any], work: Path, timeout: int) -> dict[str, Any]:
    plan = {**plan, "gpu_base_mib": gpu_used_mib() if plan["device"] == "cuda" else None}
    plan_path = work / f"plan-{plan['model']}.json"
    plan_path.write_text(json.dumps(plan, ensure_ascii=False))
    result_path = work / f"result-{plan['model']}-{system}.json"
    cmd = [sys.executable, __file__, "--child", system, "--plan", str(plan_path)]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [*cmd, "--result", str(result_path)], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-6000:], sep="\n", flush=True)
        raise SystemExit(f"{plan['model']} {system} failed (exit {proc.returncode})")
    result = json.loads(result_path.read_text())
    result["wall_s"] = time.perf_counter() - t0
    return result


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(1).min())


def combine(model: str, res: dict[str, dict[str, Any]], vectors_dir: Path) -> dict[str, list]:
    rows, e2e = [], []
    for kind, out in (("ids", rows), ("e2e", e2e)):
        ours = {(r["length"], r["batch"]): r for r in res["ours"][kind]}
        for t in res["torch"][kind]:
            o = ours[(t["length"], t["batch"])]
            row = {
                "model": model,
                "length": t["length"],
                "batch": t["batch"],
                "n_texts": t["n_texts"],
                "torch": t,
                "ours": o,
                "ratio": o["texts_per_s"] / t["texts_per_s"],
            }
            if kind == "ids":
                row["tokens_mean"] = t["tokens_mean"]
                vecs = [np.load(vectors_dir / f"{s}-{t['length']}.npy") for s in SYSTEMS]
                row["min_cosine"] = min_cosine(*vecs)
            out.append(row)
    order = {k: i for i, k in enumerate(LENGTHS)}
    for out in (rows, e2e):
        out.sort(key=lambda r: (order[r["length"]], r["batch"]))
    return {"ids": rows, "e2e": e2e}


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        if r["length"] == "short" and r["batch"] == 1024 and r["model"] in TARGET_TEXTS_PER_S:
            goal = TARGET_TEXTS_PER_S[r["model"]]
            got = r["ours"]["texts_per_s"]
            out.append(_target(f"{r['model']} short b1024 ours texts/s", got, goal))
        if r["batch"] in TARGET_RATIO_BATCHES:
            goal = TARGET_RATIO[r["length"]]
            name = f"{r['model']} {r['length']} b{r['batch']} ours/torch"
            out.append(_target(name, r["ratio"], goal))
    return out


def _target(name: str, value: float, goal: float) -> dict[str, Any]:
    return {"target": name, "value": round(value, 2), "goal": goal, "met": value >= goal}


def tables(result: dict[str, Any]) -> str:
    gpu = result["device"]["device"] == "cuda"
    mem = "GPU MiB torch / ours" if gpu else "peak RSS MiB torch / ours"
    lines = [
        f"Device: {result['device_line']}",
        "",
        "From token ids (host int64 in, pooled float32 [B, 384] back to the host):",
        "",
        f"| model | texts | batch | tokens | torch texts/s | ours texts/s | ours/torch | {mem} "
        "| min cosine |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["ids"]:
        t, o = r["torch"], r["ours"]
        if gpu:
            m = f"{_mib(t.get('gpu_mib'))} / {_mib(o.get('gpu_mib'))}"
        else:
            m = f"{_mib(result['peak_rss'][r['model']]['torch'])} / "
            m += _mib(result["peak_rss"][r["model"]]["ours"])
        lines.append(
            f"| {r['model']} | {r['length']} | {r['batch']} | {r['tokens_mean']:.0f} "
            f"| {t['texts_per_s']:,.0f} | {o['texts_per_s']:,.0f} | {r['ratio']:.2f}x | {m} "
            f"| {r['min_cosine']:.5f} |"
        )
    lines += [
        "",
        "End to end from strings (tokenization included; ours returns word, sentence and "
        "document vectors):",
        "",
        "| model | texts | batch | torch texts/s | ours texts/s | ours/torch "
        "| tokenizing: torch / ours |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["e2e"]:
        t, o = r["torch"], r["ours"]
        lines.append(
            f"| {r['model']} | {r['length']} | {r['batch']} | {t['texts_per_s']:,.0f} "
            f"| {o['texts_per_s']:,.0f} | {r['ratio']:.2f}x "
            f"| {t['tokenize_share']:.0%} / {o['tokenize_share']:.0%} |"
        )
    if result["targets"]:
        lines += ["", "| issue 10 target | value | goal | met |", "|---|---:|---:|---|"]
        for g in result["targets"]:
            met = "yes" if g["met"] else "NO"
            value = f"{g['value']:,.0f}" if g["goal"] >= 100 else f"{g['value']:.2f}"
            lines.append(f"| {g['target']} | {value} | {g['goal']:,} | {met} |")
    return "\n".join(lines)


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench/encode.py --device",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    p.add_argument("--models", nargs="+", default=["minilm-l6", "e5-small"])
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness")
    p.add_argument("--batches", nargs="+", type=int, help=f"default {list(BATCHES)}")
    p.add_argument("--repeat", type=int, help="timed passes from ids (default 5, quick 2)")
    p.add_argument("--n-e2e", type=int, help="texts per end-to-end pass (default 2048)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all)")
    p.add_argument("--timeout", type=int, default=600, help="seconds per system and model")
    p.add_argument("--json", type=Path, default=HERE / "out" / "encode_gpu.json")
    p.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | None:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.child:
        child(args.child, args.plan, args.result)
        return None
    from encoders.models import model_file, tokenizer_file

    # set before the first encode_batch here: a child forked after it would otherwise get
    # TOKENIZERS_PARALLELISM=false from the tokenizers fork handler and tokenize on one core
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    if args.device == "cuda":
        require_cuda()
    precision = "fp16" if args.device == "cuda" else "fp32"
    batches = args.batches or list(QUICK_BATCHES if args.quick else BATCHES)
    n_e2e = args.n_e2e or (2 * max(batches) if args.quick else 2048)
    info = device_info(args.device)
    result: dict[str, Any] = {
        "device": info,
        "device_line": device_line(info),
        "command": " ".join(["bench/encode.py", *(sys.argv[1:] if argv is None else argv)]),
        "config": {
            "quick": args.quick,
            "precision": precision,
            "lengths": LENGTHS,
            "batches": batches,
            "n_texts_ids": {b: n_ids(b, args.quick) for b in batches},
            "n_texts_e2e": n_e2e,
            "repeat": args.repeat or (2 if args.quick else 5),
            "repeat_e2e": 1 if args.quick else 3,
        },
        "systems": {},
        "ids": [],
        "e2e": [],
        "peak_rss": {},
        "targets": [],
    }
    print(result["device_line"], flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="encode_gpu-") as tmp:
        work = Path(tmp)
        for model in args.models:
            if not model_file(model, precision).exists() or not tokenizer_file(model).exists():
                from encoders.export import export_model

                export_model(model, [precision])  # type: ignore[list-item]
            t0 = time.perf_counter()
            n_max = max(max(n_ids(b, args.quick) for b in batches), n_e2e)
            texts = {length: texts_for(model, n_max, length) for length in LENGTHS}
            print(f"{model}: texts ready in {time.perf_counter() - t0:.1f}s", flush=True)
            (work / model).mkdir()
            plan = {
                "model": model,
                "device": args.device,
                "threads": args.threads,
                "quick": args.quick,
                "batches": batches,
                "n_e2e": n_e2e,
                "repeat": result["config"]["repeat"],
                "repeat_e2e": result["config"]["repeat_e2e"],
                "texts": texts,
                "vectors_dir": str(work / model),
            }
            res = {}
            for system in SYSTEMS:
                print(f"  {model} {system} ...", end="", flush=True)
                res[system] = run_child(system, plan, work, args.timeout)
                print(f" {res[system]['wall_s']:.0f}s", flush=True)
            if res["torch"]["info"].get("torch_cuda"):
                info["torch_cuda"] = res["torch"]["info"]["torch_cuda"]
                result["device_line"] = device_line(info)
            result["systems"][model] = {s: res[s]["info"] for s in SYSTEMS}
            result["peak_rss"][model] = {s: res[s]["peak_rss_mib"] for s in SYSTEMS}
            both = combine(model, res, work / model)
            result["ids"] += both["ids"]
            result["e2e"] += both["e2e"]
            if args.device == "cuda" and not args.quick:
                result["targets"] = targets(result["ids"])
            # written after every model: a run cut short still leaves what it measured
            args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    text = tables(result)
    args.json.with_suffix(".md").write_text(text + "\n")
    print(text, flush=True)
    print(f"wrote {args.json} and {args.json.with_suffix('.md')}", flush=True)
    return result


if __name__ == "__main__":
    main()
