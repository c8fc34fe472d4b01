"""Recommendation query latency (issue 6): one round trip (`lookup_from`) vs the naive two
calls, and the other query shapes the API can use, at 10k and 100k items.

    .venv/bin/python bench/query.py [--quick] [--engines local edge] [--hnsw-ef N] [--write-results]

Data (seeded): N items with unit 384-d document vectors drawn around 200 Gaussian cluster
centres (cosine ~0.6 to their centre), payload {item_id, title, tags: 1-3 of 20}; 1,000
users whose five named vectors (word, sentence, document, fused, negative) lie near 1-3 of
those clusters (negative near another one), payload seen_items: 20 items of their clusters,
so the seen filter removes real neighbours. Inserted with `QdrantSink.upsert_items` /
`upsert_users` in batches; insert time reported.

Queries, k=10, the user's seen items excluded (must_not HasIdCondition), run round-robin
(one user through every query shape, then the next user) so load on the machine hits all
shapes alike; warm-up rounds excluded:

1. one round trip: `query_points(query=<user point id>, lookup_from=users/fused)`;
2. naive: `QdrantSink.get_users` (vectors + seen_items), then `QdrantSink.nearest_items`;
3. worker: the user's fused vector is already in memory, `QdrantSink.nearest_items` only;
4. the same without the filter: `limit=k + len(seen)` and seen items dropped in Python;
5. hybrid: word / sentence / document vectors as three prefetches (limit 50), RRF fusion;
6. recommend: positive fused, negative `negative`, AVERAGE_VECTOR strategy;
plus numpy brute force (`items @ v`, argpartition) as the floor for any exact engine.

Engines: qdrant-client local mode (on disk, as the worker runs it; `--memory` for
`:memory:`) and, if `qdrant_edge` (the `qdrant-edge-py` wheel) imports, Qdrant Edge: two
embedded shards (`users`, `items`) with an HNSW index built by `optimize()`. Edge has no
collections, so no `lookup_from`: shape 1 is n/a there, shape 6 is a Nearest query on
2*fused - negative (what AVERAGE_VECTOR computes), and `RecommendBestScore` is added.
recall@10 compares each shape's ids with numpy's exact answer for the same query.

Prints the table with the machine line; writes bench/out/query.json (query-quick.json for
--quick); `--write-results` updates the Queries block of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from machine import machine_info
from qdrant_client import models

from streams.sink import (
    ITEM_VECTOR,
    ITEMS,
    MEMORY,
    USER_VECTORS,
    USERS,
    ItemPoint,
    QdrantSink,
    UserPoint,
    item_point_id,
    user_point_id,
)

DIM = 384
K = 10
N_USERS = 1_000
N_SEEN = 20
N_CLUSTERS = 200
N_TAGS = 20
PREFETCH = 50
HERE = Path(__file__).resolve().parent
GRANULARITIES = ("word", "sentence", "document")

Cell = Callable[[int], list[str]]  # user index -> recommended item ids


# -- data ------------------------------------------------------------------------------------


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


class Data:
    """Items around cluster centres, users near some clusters, seen items from them."""

    def __init__(self, n_items: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        centres = _unit(rng.standard_normal((N_CLUSTERS, DIM)))
        self.cluster = rng.integers(0, N_CLUSTERS, n_items)
        # noise of norm ~1.3 around a unit centre: cosine ~0.6 to it, ~0.36 within a cluster
        noise = rng.standard_normal((n_items, DIM), dtype=np.float32) * np.float32(0.068)
        self.items = _unit(centres[self.cluster] + noise)
        self.item_ids = [f"i{i}" for i in range(n_items)]
        tags = [f"tag{t}" for t in range(N_TAGS)]
        n_tags = rng.integers(1, 4, n_items)
        self.payloads = [
            {"title": f"Item {i}", "tags": [tags[t] for t in rng.choice(N_TAGS, k, False)]}
            for i, k in enumerate(n_tags.tolist())
        ]
        by_cluster = [np.flatnonzero(self.cluster == c) for c in range(N_CLUSTERS)]
        self.user_ids = [f"u{u}" for u in range(N_USERS)]
        self.vectors: dict[str, np.ndarray] = {n: np.empty((N_USERS, DIM)) for n in USER_VECTORS}
        self.seen: list[list[str]] = []
        for u in range(N_USERS):
            mine = rng.choice(N_CLUSTERS, int(rng.integers(1, 4)), replace=False)
            base = centres[mine].mean(axis=0)
            for name, sigma in (("word", 0.06), ("sentence", 0.05), ("document", 0.04)):
                self.vectors[name][u] = base + rng.standard_normal(DIM) * sigma
            self.vectors["fused"][u] = base + rng.standard_normal(DIM) * 0.03
            other = int(rng.integers(0, N_CLUSTERS))
            self.vectors["negative"][u] = centres[other] + rng.standard_normal(DIM) * 0.05
            pool = np.concatenate([by_cluster[c] for c in mine])
            picked = rng.choice(pool, min(N_SEEN, len(pool)), replace=False)
            self.seen.append([self.item_ids[i] for i in picked.tolist()])
        self.vectors = {n: _unit(v) for n, v in self.vectors.items()}
        self.seen_rows = [np.array([int(s[1:]) for s in seen]) for seen in self.seen]

    def item_points(self) -> list[ItemPoint]:
        return [
            ItemPoint(i, v, p)
            for i, v, p in zip(self.item_ids, self.items, self.payloads, strict=True)
        ]

    def user_points(self) -> list[UserPoint]:
        return [
            UserPoint(
                uid,
                {n: self.vectors[n][u] for n in USER_VECTORS},
                {"seen_items": self.seen[u]},
            )
            for u, uid in enumerate(self.user_ids)
        ]

    def exact(self, u: int, vector: np.ndarray | None = None) -> list[str]:
        """numpy brute force: the k nearest items by cosine, seen items excluded."""
        q = self.vectors["fused"][u] if vector is None else vector
        scores = self.items @ q
        scores[self.seen_rows[u]] = -np.inf
        top = np.argpartition(-scores, K)[:K]
        top = top[np.argsort(-scores[top])]
        return [self.item_ids[i] for i in top.tolist()]


# -- timing ----------------------------------------------------------------------------------


def measure(
    cells: dict[str, Cell],
    order: list[int],
    warmup: int,
    n: int,
    cap_s: float,
    truth: dict[str, Callable[[int], list[str]]],
) -> dict[str, dict[str, Any]]:
    """Round-robin over users: each user through every cell in turn; the first `warmup`
    users are not timed. A cell stops after n timed users, or once its own timed calls have
    used its share of `cap_s` (cap_s / cells) and it has at least 30; slow cells so get
    fewer samples. Each cell's ids are checked against seen items and scored for recall@10."""
    times: dict[str, list[float]] = {c: [] for c in cells}
    recall: dict[str, list[float]] = {c: [] for c in cells}
    leaked: dict[str, int] = dict.fromkeys(cells, 0)
    share = cap_s / len(cells)
    data_seen = truth["seen"]

    def active(name: str) -> bool:
        got = times[name]
        return len(got) < n and (len(got) < 30 or sum(got) < share)

    for j, u in enumerate(order):
        timed = j >= warmup
        todo = [name for name in cells if active(name)]
        if not todo:
            break
        seen = set(data_seen(u))
        for name in todo:
            t = time.perf_counter()
            ids = cells[name](u)
            dt = time.perf_counter() - t
            if not timed:
                continue
            times[name].append(dt)
            leaked[name] += len(seen.intersection(ids))
            exact = truth.get(name, truth["default"])(u)
            recall[name].append(len(set(exact).intersection(ids)) / K)
    out = {}
    for name in cells:
        ms = np.array(times[name]) * 1e3
        out[name] = {
            "n": len(ms),
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()),
            "recall_at_10": float(np.mean(recall[name])),
            "seen_items_returned": leaked[name],
        }
    return out


# -- qdrant-client local mode ----------------------------------------------------------------

NO_TEXT = models.PayloadSelectorExclude(exclude=["text"])


def _not_seen(seen: list[str]) -> models.Filter:
    return models.Filter(must_not=[models.HasIdCondition(has_id=[item_point_id(i) for i in seen])])


def _ids(res: models.QueryResponse) -> list[str]:
    return [str((p.payload or {}).get("item_id")) for p in res.points]


def build_local(data: Data, where: str) -> tuple[QdrantSink, dict[str, float]]:
    sink = QdrantSink(DIM, path=where)
    sink.ensure_collections()
    t = time.perf_counter()
    points = data.item_points()
    for at in range(0, len(points), 2_000):
        sink.upsert_items(points[at : at + 2_000])
    t_items = time.perf_counter() - t
    t = time.perf_counter()
    users = data.user_points()
    for at in range(0, len(users), 500):
        sink.upsert_users(users[at : at + 500])
    t_users = time.perf_counter() - t
    assert sink.count(ITEMS) == len(points) and sink.count(USERS) == len(users)
    return sink, {"items_s": t_items, "users_s": t_users}


def local_cells(sink: QdrantSink, data: Data) -> tuple[dict[str, Cell], dict[str, str]]:
    client = sink.client
    vec = data.vectors
    errors: dict[str, str] = {}

    def one_trip(u: int) -> list[str]:
        return _ids(
            client.query_points(
                ITEMS,
                query=user_point_id(data.user_ids[u]),
                using=ITEM_VECTOR,
                lookup_from=models.LookupLocation(collection=USERS, vector="fused"),
                query_filter=_not_seen(data.seen[u]),
                limit=K,
                with_payload=NO_TEXT,
            )
        )

    def naive(u: int) -> list[str]:
        uid = data.user_ids[u]
        vectors, payload = sink.get_users([uid])[uid]
        return [i for i, _, _ in sink.nearest_items(vectors["fused"], K, payload["seen_items"])]

    def worker(u: int) -> list[str]:
        return [i for i, _, _ in sink.nearest_items(vec["fused"][u], K, data.seen[u])]

    def no_filter(u: int) -> list[str]:
        seen = set(data.seen[u])
        res = client.query_points(
            ITEMS,
            query=vec["fused"][u],
            using=ITEM_VECTOR,
            limit=K + len(seen),
            with_payload=NO_TEXT,
        )
        return [i for i in _ids(res) if i not in seen][:K]

    def hybrid(u: int) -> list[str]:
        return _ids(
            client.query_points(
                ITEMS,
                prefetch=[
                    models.Prefetch(query=vec[g][u].tolist(), using=ITEM_VECTOR, limit=PREFETCH)
                    for g in GRANULARITIES
                ],
                query=models.FusionQuery(fusion=models.Fusion.RRF),
                query_filter=_not_seen(data.seen[u]),
                limit=K,
                with_payload=NO_TEXT,
            )
        )

    def recommend(u: int) -> list[str]:
        return _ids(
            client.query_points(
                ITEMS,
                query=models.RecommendQuery(
                    recommend=models.RecommendInput(
                        positive=[vec["fused"][u].tolist()],
                        negative=[vec["negative"][u].tolist()],
                        strategy=models.RecommendStrategy.AVERAGE_VECTOR,
                    )
                ),
                using=ITEM_VECTOR,
                query_filter=_not_seen(data.seen[u]),
                limit=K,
                with_payload=NO_TEXT,
            )
        )

    cells: dict[str, Cell] = {
        "1 one round trip (lookup_from)": one_trip,
        "2 naive: get user, then search": naive,
        "3 worker: vector in memory": worker,
        "4 worker, no filter, over-fetch": no_filter,
        "5 hybrid: 3 prefetches + RRF": hybrid,
        "6 recommend avg-vector (+neg)": recommend,
    }
    for name, cell in list(cells.items()):  # what local mode refuses is reported, not timed
        try:
            cell(0)
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"[:300]
            del cells[name]
    return cells, errors


# -- Qdrant Edge -----------------------------------------------------------------------------


def import_edge() -> Any:
    try:
        import qdrant_edge
    except ImportError:
        return None
    return qdrant_edge


def build_edge(
    qe: Any, data: Data, where: Path, index: bool = True
) -> tuple[Any, Any, dict[str, float]]:
    def shard(name: str, vectors: tuple[str, ...]) -> Any:
        params = {v: qe.EdgeVectorParams(size=DIM, distance=qe.Distance.Cosine) for v in vectors}
        return qe.EdgeShard.create(str(where / name), qe.EdgeConfig(vectors=params))

    items, users = shard(ITEMS, (ITEM_VECTOR,)), shard(USERS, USER_VECTORS)
    t = time.perf_counter()
    for at in range(0, len(data.item_ids), 2_000):
        batch = [
            qe.Point(
                item_point_id(data.item_ids[i]),
                {ITEM_VECTOR: data.items[i].tolist()},
                {**data.payloads[i], "item_id": data.item_ids[i]},
            )
            for i in range(at, min(at + 2_000, len(data.item_ids)))
        ]
        items.update(qe.UpdateOperation.upsert_points(batch))
    t_items = time.perf_counter() - t
    t = time.perf_counter()
    if index:  # the worker's edge engine never builds the index: brute force in Rust
        items.optimize()
    items.flush()
    t_index = time.perf_counter() - t
    t = time.perf_counter()
    batch = [
        qe.Point(
            user_point_id(uid),
            {n: data.vectors[n][u].tolist() for n in USER_VECTORS},
            {"user_id": uid, "seen_items": data.seen[u]},
        )
        for u, uid in enumerate(data.user_ids)
    ]
    users.update(qe.UpdateOperation.upsert_points(batch))
    users.flush()
    t_users = time.perf_counter() - t
    info = items.info()
    return (
        items,
        users,
        {
            "items_s": t_items,
            "index_s": t_index,
            "users_s": t_users,
            "segments": info.segments_count,
            "indexed_vectors": info.indexed_vectors_count,
        },
    )


def edge_cells(
    qe: Any, items: Any, users: Any, data: Data, hnsw_ef: int | None = None
) -> dict[str, Cell]:
    vec = data.vectors
    params = qe.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef else None

    def not_seen(seen: list[str]) -> Any:
        return qe.Filter(must_not=[qe.HasIdCondition({item_point_id(i) for i in seen})])

    def ids(points: list[Any]) -> list[str]:
        return [str(p.payload["item_id"]) for p in points]

    def nearest(v: Any, seen: list[str]) -> list[str]:
        return ids(
            items.query(
                qe.QueryRequest(
                    limit=K,
                    query=qe.Query.Nearest(v, using=ITEM_VECTOR),
                    filter=not_seen(seen),
                    with_payload=True,
                    params=params,
                )
            )
        )

    def naive(u: int) -> list[str]:
        (rec,) = users.retrieve(
            [user_point_id(data.user_ids[u])], with_payload=True, with_vector=["fused"]
        )
        return nearest(rec.vector["fused"], rec.payload["seen_items"])

    def worker(u: int) -> list[str]:
        return nearest(vec["fused"][u].tolist(), data.seen[u])

    def hybrid(u: int) -> list[str]:
        flt = not_seen(data.seen[u])
        prefetches = [
            qe.Prefetch(
                limit=PREFETCH,
                query=qe.Query.Nearest(vec[g][u].tolist(), using=ITEM_VECTOR),
                params=params,
            )
            for g in GRANULARITIES
        ]
        return ids(
            items.query(
                qe.QueryRequest(
                    limit=K,
                    prefetches=prefetches,
                    query=qe.Fusion.Rrf(k=60),
                    filter=flt,
                    with_payload=True,
                    params=params,
                )
            )
        )

    def avg_vector(u: int) -> list[str]:
        return nearest((2 * vec["fused"][u] - vec["negative"][u]).tolist(), data.seen[u])

    def best_score(u: int) -> list[str]:
        query = qe.RecommendQuery(
            positives=[vec["fused"][u].tolist()], negatives=[vec["negative"][u].tolist()]
        )
        return ids(
            items.query(
                qe.QueryRequest(
                    limit=K,
                    query=qe.Query.RecommendBestScore(query, using=ITEM_VECTOR),
                    filter=not_seen(data.seen[u]),
                    with_payload=True,
                    params=params,
                )
            )
        )

    return {
        "2 naive: get user, then search": naive,
        "3 worker: vector in memory": worker,
        "5 hybrid: 3 prefetches + RRF": hybrid,
        "6 recommend avg-vector (+neg)": avg_vector,
        "7 recommend best_score (+neg)": best_score,
    }


# -- runs ------------------------------------------------------------------------------------


def truth_for(data: Data) -> dict[str, Callable[[int], list[str]]]:
    """numpy's exact answer per shape (hybrid and best_score have none: recall vs fused)."""
    vec = data.vectors

    def avg(u: int) -> list[str]:
        return data.exact(u, _unit(2 * vec["fused"][u] - vec["negative"][u]))

    return {
        "default": data.exact,
        "6 recommend avg-vector (+neg)": avg,
        "seen": data.seen.__getitem__,
    }


def run_size(
    n_items: int, engines: list[str], args: argparse.Namespace, qe: Any
) -> list[dict[str, Any]]:
    t = time.perf_counter()
    data = Data(n_items)
    print(f"\n{n_items:,} items: data generated in {time.perf_counter() - t:.1f} s", flush=True)
    order = np.random.default_rng(1).permutation(N_USERS).tolist()
    truth = truth_for(data)
    rows: list[dict[str, Any]] = []
    numpy_cell: dict[str, Cell] = {"0 numpy brute force (floor)": data.exact}

    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        cells: dict[str, Cell] = {}
        builds: dict[str, dict[str, Any]] = {}
        errors: dict[str, str] = {}
        closers: list[Callable[[], None]] = []
        tagged: dict[str, Cell] = {}
        if "local" in engines:
            where = MEMORY if args.memory else str(Path(tmp) / "local")
            sink, build = build_local(data, where)
            closers.append(sink.close)
            builds["local"] = {**build, "storage": "memory" if args.memory else "disk"}
            print(
                f"  local ({builds['local']['storage']}): items inserted in "
                f"{build['items_s']:.1f} s, users in {build['users_s']:.1f} s",
                flush=True,
            )
            cells, errs = local_cells(sink, data)
            errors.update({f"local {k}": v for k, v in errs.items()})
            tagged.update({f"local|{k}": c for k, c in cells.items()})
        if "edge" in engines and qe is not None:
            items, users, build = build_edge(qe, data, Path(tmp) / "edge", args.edge_index)
            closers += [items.close, users.close]
            builds["edge"] = build
            print(
                f"  edge: items inserted in {build['items_s']:.1f} s, indexed in "
                f"{build['index_s']:.1f} s ({build['indexed_vectors']:,} indexed vectors, "
                f"{build['segments']} segments), users in {build['users_s']:.1f} s",
                flush=True,
            )
            tagged.update(
                {
                    f"edge|{k}": c
                    for k, c in edge_cells(qe, items, users, data, args.hnsw_ef).items()
                }
            )
        tagged.update({f"numpy|{k}": c for k, c in numpy_cell.items()})
        for name, err in errors.items():
            print(f"  not supported: {name}: {err}")
        load_before = os.getloadavg()
        t = time.perf_counter()
        truth_tagged = {
            "default": truth["default"],
            "seen": truth["seen"],
            **{k: truth["6 recommend avg-vector (+neg)"] for k in tagged if "avg-vector" in k},
        }
        stats = measure(tagged, order, args.warmup, args.queries, args.cap, truth_tagged)
        took = time.perf_counter() - t
        load_after = os.getloadavg()
        for closer in closers:
            closer()
    print(
        f"  measured in {took:.0f} s; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after",
        flush=True,
    )
    one_trip = stats.get("local|1 one round trip (lookup_from)")
    for key, s in stats.items():
        engine, query = key.split("|", 1)
        rows.append(
            {
                "engine": engine,
                "items": n_items,
                "query": query,
                **s,
                "p50_vs_one_trip": s["p50_ms"] / one_trip["p50_ms"] if one_trip else None,
                "p99_vs_one_trip": s["p99_ms"] / one_trip["p99_ms"] if one_trip else None,
            }
        )
    for engine, err in errors.items():
        rows.append({"engine": engine.split()[0], "items": n_items, "query": engine, "error": err})
    rows.append(
        {
            "items": n_items,
            "builds": builds,
            "load_before": load_before,
            "load_after": load_after,
            "measure_s": took,
        }
    )
    return rows


def _ratio(x: float) -> str:
    return f"{x:.2f}x" if x >= 0.1 else f"{x:.2g}x"


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| items | engine | query | p50 ms | p99 ms | n | recall@10 | p50 ÷ local one trip "
        "| p99 ÷ local one trip |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "p50_ms" not in r:
            continue
        ratio = (
            f"{_ratio(r['p50_vs_one_trip'])} | {_ratio(r['p99_vs_one_trip'])}"
            if r["p50_vs_one_trip"] is not None
            else "- | -"
        )
        leak = f" ({r['seen_items_returned']} seen returned!)" if r["seen_items_returned"] else ""
        lines.append(
            f"| {r['items']:,} | {r['engine']} | {r['query'][2:]}{leak} | {r['p50_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['n']} | {r['recall_at_10']:.2f} | {ratio} |"
        )
    return lines


def machine_line(qe: Any) -> str:
    info = machine_info()
    edge = f", qdrant-edge-py {version('qdrant-edge-py')}" if qe is not None else ""
    return (
        f"{info['cpu']}, {info['cores']} cores, {info['platform']}, Python {info['python']}, "
        f"numpy {np.__version__}, qdrant-client {version('qdrant-client')}{edge}"
    )


def write_results(lines: list[str], command: str, machine: str) -> None:
    path = HERE / "RESULTS.md"
    start, end = "<!-- query:start -->", "<!-- query:end -->"
    block = "\n".join(
        [
            start,
            f"Command: `{command}`  ",
            f"Machine: {machine}  ",
            f"Date: {time.strftime('%Y-%m-%d')}",
            "",
            *lines,
            end,
        ]
    )
    text = path.read_text()
    if start not in text:
        text += f"\n## Queries (bench/query.py)\n\n{start}\n{end}\n"
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    path.write_text(before + block + after)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10k items, 60 queries: ~1 minute")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--engines", nargs="+", default=["local", "edge"], choices=["local", "edge"])
    ap.add_argument("--queries", type=int, default=300, help="timed users per cell")
    ap.add_argument("--warmup", type=int, default=10, help="untimed users first")
    ap.add_argument("--cap", type=float, default=200.0, help="seconds of timing per size")
    ap.add_argument("--hnsw-ef", type=int, help="edge: HNSW ef at query time (default: Qdrant's)")
    ap.add_argument(
        "--no-edge-index",
        dest="edge_index",
        action="store_false",
        help="edge: no HNSW index, as the worker's edge engine runs (brute force)",
    )
    ap.add_argument("--out", help="file name under bench/out (default query.json)")
    ap.add_argument("--memory", action="store_true", help="local mode in memory, not on disk")
    ap.add_argument("--write-results", action="store_true", help="update bench/RESULTS.md")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.queries, args.warmup, args.cap = [10_000], 60, 5, 30.0
    qe = import_edge() if "edge" in args.engines else None
    if "edge" in args.engines and qe is None:
        print("qdrant_edge not importable (pip install qdrant-edge-py): edge skipped")
    machine = machine_line(qe)
    print(f"Machine: {machine}")
    rows: list[dict[str, Any]] = []
    for n_items in args.sizes:
        rows += run_size(n_items, args.engines, args, qe)
    lines = table(rows)
    print()
    print("\n".join(lines))
    command = ".venv/bin/python bench/query.py " + " ".join(sys.argv[1:])
    if qe is not None and not Path(qe.__file__).is_relative_to(sys.prefix):
        command = f"PYTHONPATH={Path(qe.__file__).parents[1]} {command}"  # installed aside
    name = args.out or ("query-quick.json" if args.quick else "query.json")
    out = HERE / "out" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"machine": machine, "command": command, "args": vars(args), "rows": rows}, indent=2
        )
    )
    print(f"\nwrote {out}")
    if args.write_results:
        write_results(lines, command.strip(), machine)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
