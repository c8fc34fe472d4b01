"""Why text-only interest vectors lose to popularity on a data set (docs/evaluation.md).

    .venv/bin/python bench/eval_why.py --events data/ml-100k.jsonl.gz

Prints, for the per-user split of `interest-stream eval`: how many distinct item texts
there are, how alike the item vectors are, and where the test positives sit: among the
100 most popular items at the user's split time, or among the 100 items nearest to the
user's fused vector.
"""

from __future__ import annotations

import argparse

import numpy as np

from encoders import Encoder
from streams.eval_data import EncodeCache, encode_texts, load_log, per_user_split, text_table
from streams.evaluate import Config, Evaluator
from streams.ranking_metrics import top_k
from streams.state import DOCUMENT


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", required=True)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--cache-dir", default="data/eval-cache")
    args = ap.parse_args()

    enc = Encoder(device="cpu")
    log = load_log([args.events])
    cache = EncodeCache(args.cache_dir, f"{enc.spec.name}-{enc.precision}")
    table = text_table(encode_texts(log.texts, lambda t, k: enc.encode(t, kind=k), cache), enc.dim)
    items = table[log.item_text_key, DOCUMENT, : enc.dim].astype(np.float64)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    bodies = {t.split("\n", 1)[-1].rsplit(".", 1)[0] for t in log.item_texts}
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(items), (2, 20_000))
    pair_cos = np.einsum("id,id->i", items[a], items[b])

    problem = per_user_split(log)
    weights = np.array([e.weight() for e in log.encoded])
    ev = Evaluator(log, problem, items, table, weights, k=10, progress=False)
    pos = problem.positives
    n_pos = pos.sum()

    def share(scores: np.ndarray) -> float:
        ranked = top_k(scores, args.depth, exclude=problem.seen)
        return float(np.take_along_axis(pos, ranked, axis=1).sum() / n_pos)

    pop = ev.popularity(3650.0)
    text = ev.scores(Config())
    in_both = top_k(pop, args.depth, problem.seen), top_k(text, args.depth, problem.seen)
    overlap = np.mean(
        [np.intersect1d(p, t).size / args.depth for p, t in zip(*in_both, strict=True)]
    )
    print(f"{len(items)} items, {len(bodies)} distinct genre lists (the body besides the year)")
    print(
        f"item-item cosine: mean {pair_cos.mean():.3f}, 5th-95th percentile "
        f"{np.quantile(pair_cos, 0.05):.3f}-{np.quantile(pair_cos, 0.95):.3f}"
    )
    print(f"{len(problem)} users, {int(n_pos)} test positives; share of them in each user's")
    print(f"  top {args.depth} by popularity at the split time: {share(pop):.3f}")
    print(f"  top {args.depth} by cosine to the fused vector:   {share(text):.3f}")
    print(f"  (the two top-{args.depth} lists overlap by {overlap:.1%} on average)")


if __name__ == "__main__":
    main()
