"""Encoder throughput on CPU: PyTorch fp32 eager (the baseline) vs our ONNX Runtime encoder.

Side by side in one run, same 2,000 short mixed Chinese/English texts (5-60 tokens), same
weights, end to end from strings (tokenization included). Each system runs in its own
subprocess so peak RSS is its own.

  baseline  transformers BertModel fp32, default (SDPA) attention, batches of 32 after
            sorting by length (what sentence-transformers' encode() does), mean pooling
  ours      encoders.Encoder: ORT CPU, fused graph, length-bucketed batches, word/sentence/
            document pooling, int8 (default) and fp32

    .venv/bin/python bench/encode.py [--models e5-small minilm-l6] [--n 2000] [--write-results]

With --device (cuda, or cpu --quick to check the harness) it runs the GPU benchmark of
issue 10 instead: PyTorch fp16 (SDPA) vs ORT CUDA fp16 with IO binding, bench/encode_gpu.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

SYSTEMS = ["torch_fp32", "ort_int8", "ort_fp32"]


def machine() -> str:
    from machine import machine_info

    m = machine_info()
    return f"{m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}"


def texts_for(model: str, n: int) -> list[str]:
    from tokenizers import Tokenizer
    from workload import short_texts

    from encoders.models import tokenizer_file

    tok = Tokenizer.from_file(str(tokenizer_file(model)))
    return short_texts(n, count_tokens=lambda t: len(tok.encode(t).ids))


def median_seconds(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    """Median wall time of `repeat` runs: this shared 2-core VM has noisy neighbours."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_torch(model: str, texts: list[str], repeat: int) -> float:
    import torch

    from encoders.export import SOURCES, _batch, _mean_pool
    from encoders.models import get_spec

    torch.set_num_threads(os.cpu_count() or 1)
    spec = get_spec(model)
    bert, tok = SOURCES[model]()
    bert.config._attn_implementation = "sdpa"  # transformers' default for a loaded model
    bert.eval()
    pad = tok.token_to_id(spec.pad_token)
    prefix = spec.prefix("passage")

    def encode(batch: list[str]) -> None:
        order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
        for k in range(0, len(order), 32):
            ids, mask = _batch(tok, [prefix + batch[i] for i in order[k : k + 32]], pad)
            with torch.inference_mode():
                h = bert(
                    input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
                ).last_hidden_state
            _mean_pool(h.numpy(), mask)

    encode(texts[:64])
    return median_seconds(lambda: encode(texts), repeat)


def run_ort(model: str, precision: str, texts: list[str], repeat: int) -> tuple[float, float]:
    from encoders import Encoder

    enc = Encoder(model, device="cpu", precision=precision)  # type: ignore[arg-type]
    enc.encode(texts[:64])
    calls = {"t": 0.0, "wall": 0.0}
    inner = enc._run  # every session run: the model's forward and the pooling graph

    def timed(session, feeds, outputs):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = inner(session, feeds, outputs)
        calls["t"] += time.perf_counter() - t
        return out

    enc._run = timed  # type: ignore[method-assign]

    def run() -> None:
        t = time.perf_counter()
        for k in range(0, len(texts), 256):  # micro-batches as the worker sees them
            enc.encode(texts[k : k + 256])
        calls["wall"] += time.perf_counter() - t

    total = median_seconds(run, repeat)
    # share of wall time inside ONNX Runtime, over all passes (not the median pass)
    return total, calls["t"] / calls["wall"]


def child(args: argparse.Namespace) -> None:
    texts = json.loads(Path(args.texts_file).read_text())
    result: dict[str, float] = {}
    if args.system == "torch_fp32":
        result["seconds"] = run_torch(args.model, texts, args.repeat)
    else:
        total, share = run_ort(args.model, args.system.split("_")[1], texts, args.repeat)
        result["seconds"], result["model_share"] = total, share
    from encode_gpu import peak_rss_mib  # VmHWM: ru_maxrss would include the parent's

    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


def main() -> None:
    if any(a == "--device" or a.startswith("--device=") for a in sys.argv[1:]):
        from encode_gpu import main as gpu_main

        gpu_main(sys.argv[1:])
        return
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", nargs="+", default=["minilm-l6", "e5-small"])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=3, help="timed passes; the median counts")
    p.add_argument("--write-results", action="store_true", help="update bench/RESULTS.md")
    p.add_argument("--system", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--texts-file", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.system:
        child(args)
        return

    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import ensure_exported

    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    rows = []
    print(f"machine: {machine()}", flush=True)
    for model in args.models:
        ensure_exported(model)
        texts = texts_for(model, args.n)
        tf = out_dir / f"texts-{model}.json"
        tf.write_text(json.dumps(texts, ensure_ascii=False))
        res = {}
        for system in SYSTEMS:
            print(f"  {model} {system} ...", end="", flush=True)
            proc = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--system",
                    system,
                    "--model",
                    model,
                    "--texts-file",
                    str(tf),
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode:
                print(proc.stderr[-2000:])
                raise SystemExit(f"{model} {system} failed")
            res[system] = json.loads(proc.stdout.strip().splitlines()[-1])
            res[system]["texts_per_s"] = len(texts) / res[system]["seconds"]
            print(f" {res[system]['texts_per_s']:.0f} texts/s", flush=True)
        base = res["torch_fp32"]["texts_per_s"]
        for system in SYSTEMS:
            r = res[system]
            rows.append(
                {
                    "model": model,
                    "system": system,
                    "texts": len(texts),
                    "texts_per_s": round(r["texts_per_s"], 1),
                    "vs_torch": round(r["texts_per_s"] / base, 2),
                    "peak_rss_mib": round(r["peak_rss_mib"]),
                    "model_share": round(r["model_share"], 2) if "model_share" in r else None,
                }
            )
    table = [
        "| model | system | texts/s | vs PyTorch fp32 | peak RSS MiB | time in ONNX Runtime |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        share = f"{r['model_share']:.0%}" if r["model_share"] is not None else "-"
        table.append(
            f"| {r['model']} | {r['system']} | {r['texts_per_s']:.0f} | {r['vs_torch']:.2f}x "
            f"| {r['peak_rss_mib']} | {share} |"
        )
    print("\n".join(table))
    (out_dir / "encode.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    if args.write_results:
        write_results(table, args)


def write_results(table: list[str], args: argparse.Namespace) -> None:
    path = HERE / "RESULTS.md"
    start, end = "<!-- encode:start -->", "<!-- encode:end -->"
    block = "\n".join(
        [
            start,
            f"Command: `.venv/bin/python bench/encode.py --n {args.n} --repeat {args.repeat} "
            f"--models {' '.join(args.models)} --write-results`  ",
            f"Machine: {machine()}  ",
            f"Date: {time.strftime('%Y-%m-%d')}",
            "",
            *table,
            end,
        ]
    )
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmark results\n\n## Encoders, CPU (bench/encode.py)\n\n"
        + start
        + "\n"
        + end
        + "\n"
    )
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    path.write_text(before + block + after)


if __name__ == "__main__":
    main()
