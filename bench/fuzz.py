"""Hostile-input fuzz run (issue 9): >= 10,000 malformed messages against a real worker.

    .venv/bin/python bench/fuzz.py [--messages 10000] [--seed 9] [--partitions 2]

Starts the embedded broker (Tansu) and `interest-stream up` (RocksDB table, Qdrant local
mode) in a temporary directory, then runs tests/reliability/hostile_input.py's `run_fuzz`:
the hostile messages (drawn by hypothesis with a fixed seed, 23 categories, plus three
1 MB payloads) shuffled among valid events for 24 users, published as raw bytes; the same
valid events for twin users published alone first (the clean run). Prints bad inputs
tried vs dead-lettered (matched in `events.dlq` by topic, partition and offset), the
worker's totals and the invariant, and the min cosine between every user and its twin.
Exits 1 if a bad input was not dead-lettered, a valid one was, the worker stopped, or a
user differs from the clean run. Writes bench/out/fuzz.json.

The CI test (tests/reliability/test_input_and_security.py) runs the same with 2,000
messages (INTEREST_FUZZ_MESSAGES sets that).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

from hostile_input import MIN_COSINE, run_fuzz  # noqa: E402
from machine import machine_info  # noqa: E402

from streams.embedded import EmbeddedBroker, ensure_topics  # noqa: E402
from streams.supervisor import WorkerProcess  # noqa: E402

OUT = HERE / "out" / "fuzz.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10_000, help="hostile messages (10,000)")
    ap.add_argument("--valid", type=int, default=None, help="valid events (messages / 10)")
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="fuzz-") as tmp,
        EmbeddedBroker(log_path=Path(tmp) / "tansu.log") as broker,
    ):
        ensure_topics(broker.bootstrap, args.partitions)
        worker = WorkerProcess(broker.bootstrap, Path(tmp) / "data", partitions=args.partitions)
        worker.start()
        try:
            report = run_fuzz(
                broker.bootstrap,
                worker,
                args.messages,
                seed=args.seed,
                valid=args.valid,
                timeout=1800.0,
            )
            alive = worker.proc is not None and worker.proc.poll() is None
        finally:
            code = worker.stop()
    seconds = time.monotonic() - started

    command = "python bench/fuzz.py " + " ".join(sys.argv[1:])
    print(f"interest-stream hostile-input fuzz run (seed {args.seed})")
    for line in report.lines():
        print("  " + line)
    print(f"  worker up through the run: {alive}; exit code after SIGTERM {code}")
    print(f"  whole run {seconds:.0f} s; machine {machine_info()}")
    print(f"  command: {command.strip()}")
    ok = (
        alive
        and code == 0
        and not report.missing
        and not report.wrong_dead_letters
        and report.valid_dead_lettered == 0
        and report.invariant_ok
        and not report.count_mismatches
        and report.min_cosine >= MIN_COSINE
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": command.strip(),
        "machine": machine_info(),
        "seed": args.seed,
        "bad_tried": report.bad,
        "bad_dead_lettered": sum(report.dead_lettered.values()),
        "missing": len(report.missing),
        "wrong_dead_letters": report.wrong_dead_letters[:20],
        "valid_dead_lettered": report.valid_dead_lettered,
        "by_category": {c: [report.tried[c], report.dead_lettered[c]] for c in report.tried},
        "error_classes": dict(report.errors),
        "valid_events": report.valid,
        "totals": report.totals,
        "invariant_ok": report.invariant_ok,
        "users": report.users,
        "min_cosine": report.min_cosine,
        "count_mismatches": len(report.count_mismatches),
        "published_mib": round(report.published_bytes / 2**20, 1),
        "largest_message_bytes": report.largest,
        "seconds_to_idle": round(report.seconds, 1),
        "worker_alive": alive,
        "exit_code": code,
        "ok": ok,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"  {'OK' if ok else 'FAILED'}; wrote {args.out.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
