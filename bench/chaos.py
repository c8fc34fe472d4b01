"""Crash recovery equals a clean run (issue 9): SIGKILL the workers mid-stream, compare.

    .venv/bin/python bench/chaos.py [--quick] [--no-baseline]

One seeded stream (streams.chaos.make_workload: --events distinct events of --users users,
clicks carrying their MovieLens item texts, searches and comments, event times out of
order, 5 % of the events re-published under new offsets with the same event id) is
replayed, each time on a fresh Tansu broker (4 partitions per topic) with RocksDB tables
and Qdrant local mode under the workers' data directories:

  clean      one worker, the stream published as fast as possible, never interrupted
  kills      one worker; the events paced at --rate while the worker is SIGKILLed
             --kills times at random points (some while it is still catching up after
             the previous restart) and restarted on the same data directory
  rebalance  two workers sharing the partitions, one of them (chosen at random)
             SIGKILLed --rebalance-kills times and restarted: the other takes its
             partitions over, and gives some back when it rejoins
  baseline   bench/baseline_faust.py (a per-event read-modify-write Faust agent, no
             dedupe) killed the same way (--kills times, paced the same); with no event
             ids or offsets in its state, every re-delivered message is applied again

Compared with the clean run: every user's five named vectors in Qdrant (1 - min cosine is
the divergence), counts per user in Qdrant and in the changelog (what a worker taking a
partition over restores) against the distinct events of that user (applied twice / lost),
and the baseline's counts against the messages it was given. Recovery time: restart ->
caught up (streams/chaos.py). Prints the figures, the machine and the command; writes
bench/out/chaos.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info

from streams.chaos import (
    ChaosRun,
    RunResult,
    Workload,
    compare,
    count_errors,
    make_workload,
    point_counts,
)

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "chaos.json"
MIN_COSINE = 0.9999


def baseline_factory(partitions: int) -> Any:
    from pipeline import BaselineProcess

    def make(bootstrap: str, data: Path) -> Any:
        return BaselineProcess(
            bootstrap, data, partitions=partitions, store="rocksdb", extra=["--state", "json"]
        )

    return make


def figures(run: RunResult, workload: Workload, clean: RunResult | None) -> dict[str, Any]:
    out = run.summary()
    out["points"] = count_errors(workload.expected, point_counts(run))
    if run.changelog is not None:
        out["changelog"] = count_errors(workload.expected, run.changelog)
    if clean is not None and run is not clean:
        d = compare(clean, run)
        out["divergence"] = d.summary()
        out["equal_to_clean"] = d.ok(MIN_COSINE)
    return out


def row(name: str, f: dict[str, Any]) -> str:
    d = f.get("divergence") or {}
    div = f"{d['max_divergence']:.1e}" if d else "-"
    pts = f["points"]
    cl = f.get("changelog")
    in_changelog = "-" if cl is None else f"{cl['applied_twice']:,} / {cl['lost']:,}"
    rec = (
        f"{f['recovery_p50_s']:.1f} / {f['recovery_max_s']:.1f}"
        if f["recovery_p50_s"] is not None
        else "-"
    )
    return (
        f"| {name} | {f['workers']} | {f['kills']} ({f['kills_while_recovering']}) "
        f"| {f['published']:,} | {f['totals'].get('applied', 0):,} "
        f"| {f['totals'].get('duplicates', 0):,} "
        f"| {pts['applied_twice']:,} / {pts['lost']:,} "
        f"| {in_changelog} "
        f"| {div} | {rec} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3,000 events, 300 users, fewer kills")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--users", type=int, default=600)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--kills", type=int, default=6)
    ap.add_argument("--rebalance-kills", type=int, default=3)
    ap.add_argument("--rate", type=float, default=100.0, help="events/s while killing")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run at most")
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.quick:
        args.events, args.users, args.items = 3_000, 300, 150
        args.kills, args.rebalance_kills = 3, 1
    command = "python bench/chaos.py " + " ".join(sys.argv[1:])
    tmp = Path(tempfile.mkdtemp(prefix="chaos-"))
    started = time.monotonic()
    load_before = os.getloadavg()
    try:
        workload = make_workload(args.events, args.users, seed=args.seed, n_items=args.items)
        print(
            f"workload: {workload.distinct:,} distinct events of {len(workload.users):,} users "
            f"+ {workload.duplicates:,} re-published, {len(workload.items):,} items",
            flush=True,
        )
        runs: dict[str, RunResult] = {}
        runs["clean"] = ChaosRun(
            workload, tmp / "clean", label="clean", timeout_s=args.timeout
        ).run()
        print("clean:", json.dumps(runs["clean"].summary()), flush=True)
        plan = [
            ("kills", dict(kills=args.kills, seed=args.seed + 1)),
            ("rebalance", dict(workers=2, kills=args.rebalance_kills, seed=args.seed + 2)),
        ]
        if not args.no_baseline:
            plan.append(
                (
                    "baseline",
                    dict(
                        kills=args.kills,
                        seed=args.seed + 1,
                        factory=baseline_factory(4),
                        group="baseline-faust",
                        changelog=None,
                        measure_recovery=False,
                    ),
                )
            )
        for name, kw in plan:
            runs[name] = ChaosRun(
                workload,
                tmp / name,
                label=name,
                rate=args.rate,
                timeout_s=args.timeout,
                **kw,  # type: ignore[arg-type]
            ).run()
            print(f"{name}:", json.dumps(runs[name].summary()), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    ours = {n: figures(r, workload, runs["clean"]) for n, r in runs.items() if n != "baseline"}
    result: dict[str, Any] = {
        "command": command,
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.monotonic() - started, 1),
        # other processes on the machine: 1-minute load averages at the start and the end
        "load_average": [round(load_before[0], 1), round(os.getloadavg()[0], 1)],
        "workload": {
            "distinct_events": workload.distinct,
            "users": len(workload.users),
            "republished": workload.duplicates,
            "items": len(workload.items),
            "rate": args.rate,
        },
        "runs": ours,
    }
    if "baseline" in runs:
        b = runs["baseline"]
        result["baseline"] = {
            **b.summary(),
            # it has no event ids: the right count for it includes the re-published ones
            "vs_messages": count_errors(workload.messages(), point_counts(b)),
            "vs_distinct_events": count_errors(workload.expected, point_counts(b)),
            "users_wrong": sum(
                point_counts(b).get(u, {}).get(k, 0) != c[k]
                for u, c in workload.messages().items()
                for k in c
            ),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    m = result["machine"]
    print()
    print(f"Command: `{command}`")
    print(f"Machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}")
    print(f"Load average (1 min) at start / end: {result['load_average']}")
    print()
    print(
        "| run | workers | kills (while recovering) | messages | applied | duplicates skipped "
        "| twice / lost in Qdrant | twice / lost in changelog | max divergence "
        "| recovery p50 / max s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, f in ours.items():
        print(row(name, f))
    if "baseline" in result:
        b = result["baseline"]
        vm = b["vs_messages"]
        print(
            f"\nbaseline (per-event read-modify-write, killed {b['kills']} times): "
            f"{vm['applied_twice']:,} of {b['published'] - len(workload.items):,} event "
            f"messages applied twice, {vm['lost']:,} lost; {b['users_wrong']:,} user-kind "
            f"counts wrong"
        )
    kills = sum(f["kills"] for f in ours.values())
    ok = all(f.get("equal_to_clean", True) for f in ours.values()) and all(
        f["points"] == {"applied_twice": 0, "lost": 0}
        and f.get("changelog", {"applied_twice": 0, "lost": 0}) == {"applied_twice": 0, "lost": 0}
        for f in ours.values()
    )
    print(f"\nkills survived: {kills}; every run equal to the clean one: {ok}")
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
