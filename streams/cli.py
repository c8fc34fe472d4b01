"""`interest-stream` command line. Heavy imports happen inside each command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from encoders.models import DEFAULT_MODEL, MODELS, PRECISIONS


def _round(vectors: Any, digits: int = 6) -> Any:
    return [[round(float(x), digits) for x in row] for row in vectors]


def _print_json(doc: Any) -> None:
    json.dump(doc, sys.stdout, ensure_ascii=False)
    print()


def cmd_export_model(args: argparse.Namespace) -> int:
    from encoders.export import ExportError, export_model

    precisions = [args.precision] if args.precision else list(PRECISIONS)
    try:
        entry = export_model(args.model, precisions)
    except ExportError as err:
        print(f"export failed: {err}", file=sys.stderr)
        return 1
    for name, info in sorted(entry["files"].items()):
        extra = (
            f"  min cosine vs torch {info['min_cosine_vs_torch']}" if "precision" in info else ""
        )
        print(f"{name:20s} {info['bytes'] / 2**20:8.1f} MiB  sha256 {info['sha256'][:16]}…{extra}")
    return 0


def _encoder(args: argparse.Namespace) -> Any:
    from encoders import Encoder

    return Encoder(args.model, device=args.device, precision=args.precision, auto_export=True)


def cmd_encode(args: argparse.Namespace) -> int:
    from encoders import EmptyTextError

    enc = _encoder(args)
    try:
        results = enc.encode(args.texts, kind=args.kind)
    except EmptyTextError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        out = {
            "model": enc.spec.name,
            "dim": enc.dim,
            "provider": enc.provider,
            "precision": enc.precision,
            "texts": [
                {
                    "text": text,
                    "tokens": list(r.words),
                    "sentences": list(r.sentences),
                    "truncated": r.truncated,
                    "word_vectors": _round(r.word_vectors),
                    "sentence_vectors": _round(r.sentence_vectors),
                    "document_vector": _round([r.document_vector])[0],
                }
                for text, r in zip(args.texts, results, strict=True)
            ],
        }
        _print_json(out)
        return 0
    print(f"model {enc.spec.name} ({enc.precision}) on {enc.provider}, dim {enc.dim}")
    for text, r in zip(args.texts, results, strict=True):
        _print_encoded(text, r)
    return 0


def _print_encoded(text: str, r: Any) -> None:
    import numpy as np

    print(f"\n{text}")
    print(f"  words     {len(r.words):3d} x {r.word_vectors.shape[1]}  {' '.join(r.words)}")
    norms = ", ".join(f"{n:.2f}" for n in np.linalg.norm(r.word_vectors, axis=1))
    print(f"            norms [{norms}]")
    snorms = ", ".join(f"{n:.2f}" for n in np.linalg.norm(r.sentence_vectors, axis=1))
    print(f"  sentences {len(r.sentences):3d} x {r.sentence_vectors.shape[1]}  norms [{snorms}]")
    print(
        f"  document  {r.document_vector.shape[0]:9d}  norm {np.linalg.norm(r.document_vector):.2f}"
    )
    head = ", ".join(f"{x:+.4f}" for x in r.document_vector[:4])
    print(f"  first 4 dims of the document vector: [{head}, ...]")


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    return run_demo(Path(args.data_dir), users=args.users, model=args.model)


def _iso(ts: float | None) -> str:
    import datetime as dt

    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def cmd_profile(args: argparse.Namespace) -> int:
    from streams.profile import build_profile
    from streams.state import CHANNELS

    for path in (args.events, args.items):
        if path and not Path(path).is_file():
            print(f"error: no such file: {path}", file=sys.stderr)
            return 2
    enc = _encoder(args)
    prof = build_profile(args.events, args.user, enc, items_path=args.items, at=args.at)
    st = prof.state
    t = args.at if args.at is not None else st.last_ts
    weights = dict(zip(CHANNELS, st.weights(t).tolist(), strict=True))
    bad = [
        {"file": f, "line": n, "reason": reason}
        for f, rep in prof.reports.items()
        for n, reason in rep.bad
    ]
    if args.json:
        vectors = st.named_vectors()
        out = {
            "user_id": args.user,
            "at": t,
            "applied": prof.applied,
            "duplicates_skipped": prof.duplicates,
            "clicks_without_item_text": prof.items_missing,
            "counts": st.counts,
            "first_ts": st.first_ts,
            "last_ts": st.last_ts,
            "weights": weights,
            "top_terms": [[w, round(v, 6)] for w, v in st.top_terms(t=t)],
            "seen_items": st.seen_items(),
            "state_bytes": len(st.to_bytes()),
            "vectors": {c: None if v is None else _round([v])[0] for c, v in vectors.items()},
            "bad_lines": bad,
        }
        _print_json(out)
        return 0
    if prof.applied == 0:
        print(f"user {args.user}: no events in {args.events}" + (" up to --at" if args.at else ""))
    counts = ", ".join(f"{k} {v}" for k, v in st.counts.items())
    print(f"user {args.user}: {prof.applied} events applied ({counts})")
    if prof.duplicates:
        print(f"  {prof.duplicates} duplicate event ids skipped")
    if prof.items_missing:
        print(f"  {prof.items_missing} clicks on items with no text (counted, no vectors)")
    print(f"  first event {_iso(st.first_ts)}, last {_iso(st.last_ts)}, state at {_iso(t)}")
    print("  decayed weights: " + ", ".join(f"{c} {w:.3f}" for c, w in weights.items()))
    terms = st.top_terms(10, t=t)
    print("  top terms: " + (", ".join(f"{w} {v:.2f}" for w, v in terms) or "-"))
    print(f"  state {len(st.to_bytes())} bytes")
    for f, rep in prof.reports.items():
        print(f"{f}: {rep.summary()}")
    for b in bad[:10]:
        print(f"  {b['file']}:{b['line']}: {b['reason']}")
    if len(bad) > 10:
        print(f"  ... {len(bad) - 10} more (--json lists all)")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    import os

    from pydantic import ValidationError

    from streams.config import Settings
    from streams.serve import serve

    given = {
        "broker": args.broker,
        "data_dir": args.data_dir,
        "partitions": args.partitions,
        "qdrant_url": args.qdrant_url,
        "web_host": args.web_host,
        "web_port": args.web_port,
        "store": args.store,
        "model": args.model,
        "device": args.device,
    }
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    embedded = args.broker is None and "INTEREST_BROKER" not in os.environ
    return serve(settings, embedded=embedded)


def _add_encoder_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", choices=sorted(MODELS), default=DEFAULT_MODEL)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--precision", choices=PRECISIONS, default=None, help="default: fp32 on CPU, fp16 on CUDA"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="interest-stream", description="Real-time multi-granularity user interest vectors."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export-model", help="build the ONNX encoder from packaged weights")
    p.add_argument("--model", choices=sorted(MODELS), default=DEFAULT_MODEL)
    p.add_argument("--precision", choices=PRECISIONS, default=None, help="default: all three")
    p.set_defaults(func=cmd_export_model)

    p = sub.add_parser("encode", help="print word/sentence/document vectors of texts")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--kind", choices=["query", "passage"], default="passage")
    p.add_argument("--json", action="store_true")
    _add_encoder_options(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("profile", help="one user's interest state from a replay file")
    p.add_argument("--events", required=True, help="JSON Lines replay file (.gz ok)")
    p.add_argument("--items", default=None, help="extra file with item lines")
    p.add_argument("--user", required=True, help="user id")
    p.add_argument("--at", type=float, default=None, help="Unix time; default: last event")
    p.add_argument("--json", action="store_true")
    _add_encoder_options(p)
    p.set_defaults(func=cmd_profile)

    from streams import client, evaluate, lag_exporter, movielens, publish

    p = sub.add_parser("eval", help="offline evaluation against baselines (docs/evaluation.md)")
    evaluate.add_eval_arguments(p)
    _add_encoder_options(p)
    p.set_defaults(func=lambda args: evaluate.cmd_eval(args, _encoder))

    p = sub.add_parser("lag-exporter", help="serve the consumer group's lag on /metrics")
    lag_exporter.add_arguments(p)

    p = sub.add_parser("replay", help="publish a JSON Lines replay file to Kafka")
    publish.add_replay_arguments(p)
    p = sub.add_parser("sample-data", help="write the demo replay file (MovieLens-100k slice)")
    movielens.add_sample_arguments(p)
    client.add_read_commands(sub)

    p = sub.add_parser("up", help="run the worker (and an embedded broker) in the foreground")
    p.add_argument(
        "--broker", default=None, help="HOST:PORT of an existing Kafka (default: start Tansu)"
    )
    p.add_argument("--data-dir", default=None, help="state, Qdrant and logs (default ./data)")
    p.add_argument("--partitions", type=int, default=None, help="per input topic (default 4)")
    p.add_argument("--qdrant-url", default=None, help="Qdrant server (default: local mode)")
    p.add_argument("--web-host", default=None, help="default 127.0.0.1")
    p.add_argument("--web-port", type=int, default=None, help="default 6066")
    p.add_argument("--store", choices=["rocksdb", "memory"], default=None)
    p.add_argument("--model", choices=sorted(MODELS), default=None)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("demo", help="broker, worker, sample replay, recommendations, stop")
    p.add_argument("--data-dir", default="data/demo", help="wiped and rebuilt on each run")
    p.add_argument("--users", type=int, default=15, help="MovieLens users in the sample")
    p.add_argument("--model", choices=sorted(MODELS), default=DEFAULT_MODEL)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
