"""Interest-state benchmark: incremental update vs recompute, batch throughput, state size.

Run: .venv/bin/python bench/state.py [--quick]

1. Per-event cost of `InterestState.update` on a user who already has H events, side by
   side with recomputing that user's state from the full history of H + 1 events (the
   naive way, done as well as we can: one vectorised `apply_batch` over pre-built columns).
2. `apply_batch` throughput on 100k pre-encoded events (random unit vectors, d=384) over
   10k users, in micro-batches of several sizes; plus what building the columns from
   per-event records and summarising a text cost.
3. Bytes per user state and encode/decode time.

Prints a table and the machine line; writes bench/out/state.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_info

from streams.state import (
    DAY,
    EncodedEvent,
    EventBatch,
    InterestState,
    TextVectors,
    apply_batch,
    summarize,
)

DIM = 384
OUT = Path(__file__).resolve().parent / "out" / "state.json"


def machine() -> dict:
    return {**machine_info(), "numpy": np.__version__}


def random_units(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def workload(rng: np.random.Generator, n: int, n_users: int, vocab: int = 5000) -> EventBatch:
    """n pre-encoded events: 1-8 content words, 1-2 sentences and a document each.

    Sums of k random unit vectors are drawn as one random unit vector times sqrt(k), which
    has the same statistics and is all the state ever sees of them.
    """
    n_words = rng.integers(1, 9, n)
    n_sent = rng.integers(1, 3, n)
    words = [f"term{i}" for i in range(vocab)]
    zipf = np.minimum(rng.zipf(1.3, int(n_words.sum())), vocab) - 1
    flat = [words[i] for i in zipf.tolist()]
    terms, at = [], 0
    for k in n_words.tolist():
        terms.append(tuple((w, 1) for w in flat[at : at + k]))
        at += k
    kind = rng.choice(3, n, p=[0.6, 0.25, 0.15])
    rating = rng.integers(1, 6, n)
    weight = np.where(
        rng.random(n) < 0.1, np.where(rating >= 3, (rating - 2) / 3, -(3 - rating) / 2), 1.0
    )
    items = [
        f"i{i}" if i >= 0 else None
        for i in np.where(kind == 1, -1, rng.integers(0, 20_000, n)).tolist()
    ]
    vectors = EventBatch.pack_vectors(
        random_units(rng, n) * np.sqrt(n_words)[:, None].astype(np.float32),
        n_words,
        random_units(rng, n) * np.sqrt(n_sent)[:, None].astype(np.float32),
        n_sent,
        random_units(rng, n),
    )
    user = rng.integers(0, n_users, n)
    # keyed by user: one partition (of 8) per user and topic; offsets grow per partition
    sources = [(f"events.{k}", p) for k in ("click", "search", "comment") for p in range(8)]
    return EventBatch(
        user=user,
        kind=kind,
        ts=1.7e9 + np.sort(rng.uniform(0, 30 * DAY, n)) + rng.normal(0, 600, n),
        weight=weight.astype(np.float64),
        vectors=vectors,
        terms=terms,
        items=items,
        sources=sources,
        source=kind * 8 + user % 8,
        offset=np.arange(n, dtype=np.int64),
    )


def rows(batch: EventBatch, a: int, b: int, users: np.ndarray | None = None) -> EventBatch:
    """Events a..b of a batch as a batch of its own (views, no copies of the vectors)."""
    return EventBatch(
        user=batch.user[a:b] if users is None else users,
        kind=batch.kind[a:b],
        ts=batch.ts[a:b],
        weight=batch.weight[a:b],
        vectors=batch.vectors[a:b],
        terms=None if batch.terms is None else batch.terms[a:b],
        items=None if batch.items is None else batch.items[a:b],
        sources=batch.sources,
        source=batch.source[a:b],
        offset=batch.offset[a:b],
    )


def as_event(batch: EventBatch, i: int) -> EncodedEvent:
    v = batch.vectors[i]
    text = TextVectors(
        v[0, :-1], int(v[0, -1]), v[1, :-1], int(v[1, -1]), v[2, :-1], batch.terms[i]
    )
    w = float(batch.weight[i])
    return EncodedEvent(
        ("click", "search", "comment")[int(batch.kind[i])],
        float(batch.ts[i]),
        text,
        batch.items[i],
        rating=None if w == 1.0 else (2 + 3 * w if w > 0 else 3 - 2 * -w),
        topic=batch.sources[int(batch.source[i])][0],
        partition=batch.sources[int(batch.source[i])][1],
        offset=int(batch.offset[i]),
    )


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def incremental_vs_recompute(rng, histories, n_new: int, repeat: int) -> list[dict]:
    results = []
    pool = workload(rng, max(histories) + n_new, 1)
    pool_users = np.zeros(len(pool), dtype=np.int64)
    new_events = [as_event(pool, i) for i in range(len(pool) - n_new, len(pool))]
    for h in histories:
        base = InterestState(DIM)
        apply_batch([base], rows(pool, 0, h, pool_users[:h]))
        data = base.to_bytes()

        def incremental(data=data):
            state = InterestState.from_bytes(data)
            for ev in new_events:
                state.update(ev)
            return state

        def incremental_bytes(data=data):
            for ev in new_events:
                state = InterestState.from_bytes(data)
                state.update(ev)
                data = state.to_bytes()

        # the naive way: every new event rebuilds the state from the whole history
        n_recompute = max(1, min(n_new, 20_000 // h))
        tail = len(pool) - n_new

        def recompute(h=h, n_recompute=n_recompute, tail=tail):
            for j in range(n_recompute):
                history = np.r_[0:h, tail + j]  # H old events + the new one
                state = InterestState(DIM)
                apply_batch(
                    [state],
                    EventBatch(
                        user=pool_users[: h + 1],
                        kind=pool.kind[history],
                        ts=pool.ts[history],
                        weight=pool.weight[history],
                        vectors=pool.vectors[history],
                        terms=[pool.terms[i] for i in history.tolist()],
                        items=[pool.items[i] for i in history.tolist()],
                    ),
                )
            return state

        t_inc = best_of(incremental, repeat) / n_new
        t_bytes = best_of(incremental_bytes, repeat) / n_new
        t_rec = best_of(recompute, repeat) / n_recompute
        # same answer both ways (the first new event on top of the history)
        one = InterestState.from_bytes(data)
        one.update(new_events[0])
        full = InterestState(DIM)
        apply_batch([full], rows(pool, 0, h, pool_users[:h]))
        full.update(new_events[0])
        diff = float(np.abs(one.vectors() - full.vectors()).max())
        results.append(
            {
                "history": h,
                "incremental_us": t_inc * 1e6,
                "incremental_with_bytes_us": t_bytes * 1e6,
                "recompute_us": t_rec * 1e6,
                "speedup": t_rec / t_inc,
                "max_abs_diff": diff,
            }
        )
    return results


def batch_throughput(rng, n: int, n_users: int, sizes, repeat: int) -> dict:
    batch = workload(rng, n, n_users)
    bare = EventBatch(**{**batch.__dict__, "terms": None, "items": None})
    out: dict = {"events": n, "users": n_users, "dim": DIM, "by_batch_size": []}

    def run(source: EventBatch, size: int):
        states = [InterestState(DIM) for _ in range(n_users)]
        t = time.perf_counter()
        for a in range(0, n, size):
            apply_batch(states, rows(source, a, min(n, a + size)))
        return time.perf_counter() - t, states

    for size in sizes:
        for name, source in (("full", batch), ("no terms/items", bare)):
            elapsed = min(run(source, size)[0] for _ in range(repeat))
            out["by_batch_size"].append(
                {"batch_size": size, "work": name, "seconds": elapsed, "events_per_s": n / elapsed}
            )
    _, states = run(batch, sizes[-1])
    sizes_b = [len(s.to_bytes()) for s in states]
    out["state_bytes_mean"] = float(np.mean(sizes_b))
    out["state_bytes_max"] = int(np.max(sizes_b))
    sample = states[: min(2000, n_users)]
    t = time.perf_counter()
    blobs = [s.to_bytes() for s in sample]
    out["encode_us"] = (time.perf_counter() - t) / len(sample) * 1e6
    t = time.perf_counter()
    for b in blobs:
        InterestState.from_bytes(b)
    out["decode_us"] = (time.perf_counter() - t) / len(sample) * 1e6

    # building columns from per-event records (what the app does per micro-batch)
    m = min(n, 10_000)
    records = [as_event(batch, i) for i in range(m)]
    users = batch.user[:m].tolist()
    t = time.perf_counter()
    EventBatch.from_events(users, records, DIM)
    out["from_events_us_per_event"] = (time.perf_counter() - t) / m * 1e6
    # summarising one encoded text (once per text; item texts are cached)
    words = [f"w{i}" for i in range(8)]
    wv, sv, dv = random_units(rng, 8), random_units(rng, 2), random_units(rng, 1)[0]
    k = 2000
    t = time.perf_counter()
    for _ in range(k):
        summarize(words, wv, sv, dv)
    out["summarize_us_per_text"] = (time.perf_counter() - t) / k * 1e6
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    if args.quick:
        histories, n_new, repeat = [10, 100, 1000], 50, 2
        n, n_users, sizes = 20_000, 2_000, [1_000, 10_000]
    else:
        histories, n_new, repeat = [10, 100, 1000, 10_000], 200, 3
        n, n_users, sizes = 100_000, 10_000, [1_000, 10_000, 100_000]
    info = machine()
    print(
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"numpy {info['numpy']}"
    )
    inc = incremental_vs_recompute(rng, histories, n_new, repeat)
    print("\nPer-event cost, one user with H events already applied (d=384)")
    print(
        f"{'H':>7} | {'update':>10} | {'update+bytes':>12} | {'recompute':>12} | "
        f"{'recompute/update':>16} | {'max|diff|':>9}"
    )
    for r in inc:
        print(
            f"{r['history']:>7} | {r['incremental_us']:>8.1f}us | "
            f"{r['incremental_with_bytes_us']:>10.1f}us | {r['recompute_us']:>10.1f}us | "
            f"{r['speedup']:>15.0f}x | {r['max_abs_diff']:>9.1e}"
        )
    thr = batch_throughput(rng, n, n_users, sizes, repeat=2)
    print(
        f"\napply_batch, {thr['events']:,} pre-encoded events over {thr['users']:,} users "
        f"(1-8 words, 1-2 sentences, 1 document each; d={DIM}, float32; with offsets)"
    )
    print(f"{'batch size':>10} | {'bookkeeping':>15} | {'seconds':>8} | {'events/s':>10}")
    for r in thr["by_batch_size"]:
        print(
            f"{r['batch_size']:>10,} | {r['work']:>15} | {r['seconds']:>8.3f} | "
            f"{r['events_per_s']:>10,.0f}"
        )
    print(
        f"\nstate bytes per user: mean {thr['state_bytes_mean']:.0f}, max "
        f"{thr['state_bytes_max']} (bound 4096); encode {thr['encode_us']:.1f}us, decode "
        f"{thr['decode_us']:.1f}us"
    )
    print(
        f"EventBatch.from_events: {thr['from_events_us_per_event']:.1f}us/event; "
        f"summarize: {thr['summarize_us_per_text']:.1f}us/text (8 words, 2 sentences)"
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {"machine": info, "quick": args.quick, "incremental": inc, "batch": thr}, indent=2
        )
    )
    print(f"\nwrote {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
