"""Top-k ranking metrics, bootstrap intervals and score calibration. Pure numpy, no I/O.

Everything is vectorised over users: a ranking is a [users, k] matrix of item indices,
ground truth a boolean [users, items] matrix of each user's test positives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Calibration",
    "bootstrap_ci",
    "coverage",
    "expected_calibration_error",
    "fit_calibration",
    "ndcg_at_k",
    "recall_at_k",
    "top_k",
]


def top_k(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """[users, k] item indices by descending score (ties: lower index first); `exclude`d
    [users, items] entries never appear unless a user has fewer than k others.

    >>> top_k(np.array([[0.1, 0.9, 0.5, 0.9]]), 2).tolist()
    [[1, 3]]
    >>> top_k(np.array([[0.1, 0.9, 0.5]]), 2, exclude=np.array([[False, True, False]])).tolist()
    [[2, 0]]
    """
    s = np.array(scores, dtype=np.float64)
    if exclude is not None:
        s[exclude] = -np.inf
    k = min(k, s.shape[1])
    # argpartition picks the k best in O(items); the sort then orders only those k. A stable
    # sort on -s over indices in ascending order breaks ties by the lower item index.
    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    part.sort(axis=1)
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def _hits(ranked: np.ndarray, positives: np.ndarray) -> np.ndarray:
    return np.take_along_axis(positives, ranked, axis=1)


def recall_at_k(ranked: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Per user: share of their positives in the top k (NaN for users without positives).

    >>> pos = np.array([[True, False, True, False]])
    >>> recall_at_k(np.array([[0, 1]]), pos).tolist()
    [0.5]
    """
    n = positives.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _hits(ranked, positives).sum(axis=1) / n


def ndcg_at_k(ranked: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Per user: binary-relevance NDCG@k, DCG = Σ hit_r / log2(r + 1) over ranks r = 1..k,
    normalised by the DCG of min(k, positives) hits at the top.

    >>> pos = np.array([[True, False, True, False]])
    >>> ndcg_at_k(np.array([[0, 2]]), pos).tolist(), ndcg_at_k(np.array([[1, 2]]), pos).round(4)
    ([1.0], array([0.3869]))
    """
    k = ranked.shape[1]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (_hits(ranked, positives) * discount).sum(axis=1)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[np.minimum(positives.sum(axis=1), k)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return dcg / ideal


def coverage(ranked: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one user's top k.

    >>> coverage(np.array([[0, 1], [1, 2]]), 10)
    0.3
    """
    return float(np.unique(ranked).size / n_items) if n_items else 0.0


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over users (resampling users).

    `values` may be [users] or [systems, users]: resampling the same users for every row
    keeps paired comparisons paired. Returns (lo, hi), or arrays of them per row.

    >>> lo, hi = bootstrap_ci(np.r_[np.zeros(50), np.ones(50)])
    >>> 0.39 < lo < 0.5 < hi < 0.61
    True
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[-1]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    means = v[..., idx].mean(axis=-1)  # [..., n_boot]
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail], axis=-1)
    return (float(lo), float(hi)) if v.ndim == 1 else (lo, hi)


@dataclass(frozen=True)
class Calibration:
    """p = σ(β·s + b): the probability that a recommended item is a hit, from its score."""

    beta: float
    bias: float

    def p(self, s: np.ndarray | float) -> np.ndarray:
        z = np.clip(self.beta * np.asarray(s, dtype=np.float64) + self.bias, -500, 500)
        return 1.0 / (1.0 + np.exp(-z))


def fit_calibration(scores: np.ndarray, labels: np.ndarray, iters: int = 50) -> Calibration:
    """Logistic regression of `labels` on `scores` (two parameters) by Newton's method,
    with a tiny ridge so that separable data still gives finite parameters.

    >>> rng = np.random.default_rng(0)
    >>> s = rng.uniform(0, 1, 20_000)
    >>> y = rng.uniform(size=s.size) < 1 / (1 + np.exp(-(8 * s - 6)))
    >>> c = fit_calibration(s, y)
    >>> round(c.beta), round(c.bias)
    (8, -6)
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if s.size == 0 or y.min() == y.max():
        raise ValueError("calibration needs both hits and misses")
    x = np.stack([s, np.ones_like(s)], axis=1)
    rate = y.mean()
    w = np.array([0.0, math.log(rate / (1 - rate))])  # start at the base rate
    ridge = 1e-6 * s.size
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -500, 500)))
        grad = x.T @ (p - y) + ridge * np.array([w[0], 0.0])
        hess = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.diag([1.0, 0.0])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return Calibration(beta=float(w[0]), bias=float(w[1]))


def expected_calibration_error(p: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """ECE over (about) equal-count bins: Σ_b (n_b / n) |mean p_b − hit rate_b|.

    >>> round(expected_calibration_error(np.full(100, 0.3), np.arange(100) < 30), 12)
    0.0
    >>> round(expected_calibration_error(np.full(100, 0.5), np.arange(100) < 30), 2)
    0.2
    """
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.size == 0:
        return float("nan")
    # bin edges at quantiles of p; equal p values always share a bin
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1))[1:-1])
    which = np.searchsorted(edges, p, side="right")
    n = np.bincount(which, minlength=edges.size + 1)
    gap = np.bincount(which, weights=p - y, minlength=edges.size + 1)
    total = np.abs(gap[n > 0]).sum()
    return float(total / p.size)
