"""`interest-stream eval`: offline evaluation against baselines (docs/evaluation.md).

The user states are built with the worker's own code (`apply_batch` over the same
`EncodedEvent`s), read at each user's split time, and turned into item scores exactly as the
live API asks Qdrant: cosine to the item's document vector; with a negative vector, Qdrant's
`average_vector` recommend query (2·v̂ − n̂); with a popularity prior, score + γ·prior.

Everything learned from other users (popularity, tuned settings, calibration) only sees
events before the evaluated user's split time: tuning is prequential, repeated at a few
checkpoints, and each user gets the settings of the latest checkpoint before their split.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import math
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from streams.eval_data import (
    EncodeCache,
    Log,
    Problem,
    before,
    encode_texts,
    global_split,
    load_log,
    per_user_split,
    text_table,
)
from streams.ranking_metrics import (
    Calibration,
    bootstrap_ci,
    coverage,
    expected_calibration_error,
    fit_calibration,
    ndcg_at_k,
    recall_at_k,
    top_k,
)
from streams.state import (
    CHANNELS,
    DAY,
    DEFAULT_PARAMS,
    DOCUMENT,
    KINDS,
    NEGATIVE,
    EventBatch,
    InterestState,
    StateParams,
    apply_batch,
)

HALF_LIVES_DAYS = (1.0, 3.0, 7.0, 14.0, 30.0, 60.0, 180.0, 3650.0)
BLENDS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
POPULARITY_HALF_LIVES_DAYS = (1.0, 7.0, 30.0, 3650.0)
ALPHA_STEP = 0.1
CHECKPOINTS = (0.2, 0.4, 0.6, 0.8)  # quantiles of the users' split times where we re-tune
MIN_TUNE_USERS = 30
CALIBRATION_DEPTH = 50  # fit on each validation user's top 50
GLOBAL_QUANTILE = 0.8
MIN_GLOBAL_USERS = 100
CHUNK = 8192  # events per apply_batch call


@dataclass(frozen=True)
class Config:
    """What decides a ranking: state half-lives and fusion weights, the negative example,
    and the popularity prior. Half-lives in days."""

    alphas: tuple[float, float, float] = DEFAULT_PARAMS.alphas
    half_lives: tuple[float, float, float] = (
        DEFAULT_PARAMS.half_life_word / DAY,
        DEFAULT_PARAMS.half_life_sentence / DAY,
        DEFAULT_PARAMS.half_life_document / DAY,
    )
    negative: bool = False
    blend: float = 0.0
    popularity_half_life: float = 1.0
    prior_candidates: int = 100

    def describe(self) -> str:
        a = "/".join(f"{x:g}" for x in self.alphas)
        h = "/".join(f"{x:g}" for x in self.half_lives)
        extra = f", negative {'on' if self.negative else 'off'}"
        if self.blend:
            extra += (
                f", prior γ {self.blend:g} (popularity half-life {self.popularity_half_life:g} d)"
            )
        return f"α {a}, half-lives {h} d{extra}"


def ours() -> Config:
    """The configuration `interest-stream up` runs with (StateParams and Settings defaults)."""
    from streams.config import Settings

    s = Settings()
    return Config(
        negative=True,
        blend=s.popularity_prior_weight,
        popularity_half_life=s.popularity_half_life_s / DAY,
        prior_candidates=s.prior_candidates,
    )


# ---------------------------------------------------------------------------------------
# Scores for one problem


@dataclass
class Evaluator:
    """Scores and metrics for the users of one `Problem`; user states cached per half-life."""

    log: Log
    problem: Problem
    items: np.ndarray  # [I, d] unit document vectors of the catalogue
    table: np.ndarray  # text table (see eval_data.text_table)
    weights: np.ndarray  # [n] signed event weights of the whole log
    k: int
    progress: bool = True
    _channels: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict, repr=False
    )
    _popularity: dict[float, np.ndarray] = field(default_factory=dict, repr=False)

    def channels(self, half_life: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unit vectors [4, U, d], present [4, U], cosines to items [4, U, I]) of the states
        built with every granularity's half-life = `half_life` days (negative: default)."""
        if half_life not in self._channels:
            params = StateParams(
                half_life_word=half_life * DAY,
                half_life_sentence=half_life * DAY,
                half_life_document=half_life * DAY,
            )
            vectors, present = replay_states(
                self.problem, self.log, self.table, self.weights, params, self.progress
            )
            cos = np.einsum("gud,id->gui", vectors, self.items, optimize=True)
            self._channels[half_life] = (vectors, present, cos)
        return self._channels[half_life]

    def popularity(self, half_life: float) -> np.ndarray:
        """[U, I] decayed click counts of everyone's clicks before each user's read time."""
        if half_life not in self._popularity:
            self._popularity[half_life] = popularity_at(self.log, self.problem.at, half_life)
        return self._popularity[half_life]

    def prior(self, half_life: float) -> np.ndarray:
        """[U, I] popularity prior in [0, 1]: log1p(count) / log1p(the top count)."""
        p = np.log1p(self.popularity(half_life))
        top = p.max(axis=1, keepdims=True)
        return p / np.where(top > 0, top, 1.0)

    def scores(self, cfg: Config) -> np.ndarray:
        """[U, I] what the live API would rank by for `cfg`."""
        picked = [self.channels(h) for h in cfg.half_lives]
        vec = np.stack([picked[g][0][g] for g in range(3)])  # [3, U, d]
        present = np.stack([picked[g][1][g] for g in range(3)])  # [3, U]
        cos = np.stack([picked[g][2][g] for g in range(3)])  # [3, U, I]
        a = np.asarray(cfg.alphas, dtype=np.float64)[:, None] * present  # [3, U]
        total = a.sum(axis=0)
        a = a / np.where(total > 0, total, 1.0)
        gram = np.einsum("gud,hud->ugh", vec, vec)
        norm = np.sqrt(np.maximum(np.einsum("gu,ugh,hu->u", a, gram, a), 0.0))
        ok = norm > 1e-12
        s = np.einsum("gu,gui->ui", a, cos) / np.where(ok, norm, 1.0)[:, None]
        s[~ok] = 0.0
        if cfg.negative:
            neg_vec, neg_present, neg_cos = self.channels(cfg.half_lives[DOCUMENT])
            use = neg_present[NEGATIVE] & ok
            fused_dot_neg = np.einsum("gu,gud,ud->u", a, vec, neg_vec[NEGATIVE]) / np.where(
                ok, norm, 1.0
            )
            q_norm = np.sqrt(np.maximum(5.0 - 4.0 * fused_dot_neg, 1e-12))
            s = np.where(use[:, None], (2.0 * s - neg_cos[NEGATIVE]) / q_norm[:, None], s)
        if cfg.blend:
            s = self.blend(s, cfg)
        return s

    def blend(self, s: np.ndarray, cfg: Config) -> np.ndarray:
        """score + γ·prior over each user's candidates: the top `prior_candidates` by score
        and the top `prior_candidates` by popularity, as the live API re-ranks what Qdrant
        and the worker's popularity counts return; everything else stays below them."""
        n = min(cfg.prior_candidates, s.shape[1])
        prior = self.prior(cfg.popularity_half_life)
        out = np.full_like(s, -1e9)
        for short in (top_k(s, n, exclude=self.problem.seen), top_k(prior, n, self.problem.seen)):
            blended = np.take_along_axis(s + cfg.blend * prior, short, axis=1)
            np.put_along_axis(out, short, blended, axis=1)
        return out

    def no_decay_scores(self) -> np.ndarray:
        """Cosine to the plain mean of the train items' document vectors."""
        d = self.items.shape[1]
        docs = self.table[self.log.text_key[self.problem.train], DOCUMENT, :d].astype(np.float64)
        sums = np.zeros((len(self.problem), d))
        np.add.at(sums, self.problem.train_row, docs)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        return (sums / np.where(norms > 0, norms, 1.0)) @ self.items.T

    def rank(self, scores: np.ndarray) -> np.ndarray:
        return top_k(scores, self.k, exclude=self.problem.seen)

    def per_user(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ranked [U, k], recall [U], ndcg [U])."""
        ranked = self.rank(scores)
        pos = self.problem.positives
        return ranked, recall_at_k(ranked, pos), ndcg_at_k(ranked, pos)

    def objective(self, cfg: Config) -> float:
        return float(self.per_user(self.scores(cfg))[2].mean())

    def calibration_pairs(self, cfg: Config, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(score, hit) of every user's top `depth` items under `cfg`."""
        s = self.scores(cfg)
        ranked = top_k(s, depth, exclude=self.problem.seen)
        hits = np.take_along_axis(self.problem.positives, ranked, axis=1)
        return np.take_along_axis(s, ranked, axis=1).ravel(), hits.ravel()


def replay_states(
    problem: Problem,
    log: Log,
    table: np.ndarray,
    weights: np.ndarray,
    params: StateParams,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Unit channel vectors [4, U, d] and presence [4, U] after applying every user's train
    events with `apply_batch`, in chunks (the worker's code path)."""
    dim = table.shape[2] - 1
    states = [InterestState(dim, params) for _ in range(len(problem))]
    ev = problem.train
    chunks = range(0, ev.size, CHUNK)
    desc = f"replay (half-life {params.half_life_word / DAY:g} d)"
    for start in tqdm(chunks, desc=desc, unit=" chunks", leave=False, disable=not progress):
        part = ev[start : start + CHUNK]
        batch = EventBatch(
            user=problem.train_row[start : start + CHUNK],
            kind=log.kind[part],
            ts=log.ts[part],
            weight=weights[part],
            vectors=table[log.text_key[part]],
        )
        apply_batch(states, batch)
    vectors = np.zeros((len(CHANNELS), len(problem), dim))
    present = np.zeros((len(CHANNELS), len(problem)), dtype=bool)
    for u, st in enumerate(states):
        for g, c in enumerate(CHANNELS):
            v = st.vector(c)
            if v is not None:
                vectors[g, u], present[g, u] = v, True
    return vectors, present


def popularity_at(log: Log, at: np.ndarray, half_life: float) -> np.ndarray:
    """[U, I]: Σ over all clicks with ts < at[u] of exp(−λ (at[u] − ts)), per item."""
    lam = math.log(2) / (half_life * DAY)
    clicks = np.flatnonzero((log.kind == KINDS.index("click")) & (log.item >= 0))
    clicks = clicks[np.argsort(log.ts[clicks], kind="stable")]
    c_ts, c_item = log.ts[clicks], log.item[clicks]
    out = np.zeros((len(at), len(log.item_ids)))
    order = np.argsort(at, kind="stable")
    pop = np.zeros(len(log.item_ids))
    t_prev, done = -math.inf, 0
    for u in order.tolist():
        t = float(at[u])
        if t > t_prev:
            if t_prev > -math.inf:
                pop *= math.exp(-lam * (t - t_prev))
            upto = int(np.searchsorted(c_ts, t, side="left"))
            np.add.at(pop, c_item[done:upto], np.exp(-lam * (t - c_ts[done:upto])))
            done, t_prev = upto, t
        out[u] = pop
    return out


# ---------------------------------------------------------------------------------------
# Tuning on the train period


def _simplex(step: float) -> list[tuple[float, float, float]]:
    n = round(1 / step)
    return [
        (round(i * step, 6), round(j * step, 6), round((n - i - j) * step, 6))
        for i in range(n + 1)
        for j in range(n + 1 - i)
    ]


@dataclass
class Tuned:
    fusion: Config  # α and half-lives only
    full: Config  # plus negative example and popularity prior
    calibration: Calibration | None  # of `ours` on the validation users
    users: int  # validation users of the first fold
    cutoff: float
    note: str = ""


def tune(make: Any, log: Log, events: np.ndarray, cutoff: float, base: Config) -> Tuned:
    """Coordinate ascent on mean NDCG@k over two rolling folds of `events` (per-user split,
    then the same split of its train part); α on a 0.1 simplex grid, each granularity's
    half-life, then the negative example and the popularity prior."""
    fold1 = per_user_split(log, events)
    folds = [fold1, per_user_split(log, fold1.train)]
    evaluators = [make(f) for f in folds if len(f) >= MIN_TUNE_USERS]
    if not evaluators:
        return Tuned(base, base, None, len(fold1), cutoff, "too few users: defaults")
    cache: dict[Config, float] = {}

    def score(cfg: Config) -> float:
        if cfg not in cache:
            cache[cfg] = float(np.mean([e.objective(cfg) for e in evaluators]))
        return cache[cfg]

    def best_of(candidates: Iterable[Config], current: Config) -> Config:
        return max([current, *candidates], key=score)

    def ascend(cfg: Config, moves: Any) -> Config:
        for _ in range(3):
            before_round = cfg
            for move in moves:
                cfg = best_of(move(cfg), cfg)
            if cfg == before_round:
                break
        return cfg

    def alphas(c: Config) -> list[Config]:
        return [replace(c, alphas=a) for a in _simplex(ALPHA_STEP)]

    def half_life(g: int) -> Any:
        def move(c: Config) -> list[Config]:
            return [
                replace(c, half_lives=tuple(h if i == g else x for i, x in enumerate(c.half_lives)))
                for h in HALF_LIVES_DAYS
            ]

        return move

    def extras(c: Config) -> list[Config]:
        return [
            replace(c, negative=n, blend=b, popularity_half_life=h)
            for n, b, h in itertools.product((False, True), BLENDS, POPULARITY_HALF_LIVES_DAYS)
        ]

    plain = replace(base, negative=False, blend=0.0)
    fusion = ascend(plain, [alphas, half_life(0), half_life(1), half_life(2)])
    full = ascend(best_of(extras(fusion), fusion), [alphas, extras])
    s, hit = evaluators[0].calibration_pairs(ours(), CALIBRATION_DEPTH)
    calibration = fit_calibration(s, hit) if 0 < hit.sum() < hit.size else None
    return Tuned(fusion, full, calibration, len(evaluators[0].problem), cutoff)


def tune_popularity(make: Any, log: Log, events: np.ndarray) -> float:
    """The popularity baseline's half-life (days), chosen on the same folds."""
    fold1 = per_user_split(log, events)
    folds = [e for e in (make(fold1), make(per_user_split(log, fold1.train))) if len(e.problem)]
    if not folds or len(folds[0].problem) < MIN_TUNE_USERS:
        return ours().popularity_half_life

    def score(h: float) -> float:
        return float(np.mean([e.per_user(e.popularity(h))[2].mean() for e in folds]))

    return max(POPULARITY_HALF_LIVES_DAYS, key=score)


# ---------------------------------------------------------------------------------------
# One table


SYSTEMS = (
    "popularity",
    "no_decay",
    "word_only",
    "sentence_only",
    "document_only",
    "seed_fixed_fusion",
    "tuned_fusion",
    "tuned_fusion_prior",
    "ours",
)


@dataclass
class Table:
    users: int
    per_user: dict[str, dict[str, np.ndarray]]  # system -> recall/ndcg per user
    coverage: dict[str, float]
    calibration: dict[str, Any]
    tuning: list[dict[str, Any]]

    @cached_property
    def intervals(self) -> dict[str, dict[str, tuple[float, float]]]:
        out: dict[str, dict[str, tuple[float, float]]] = {}
        for name, m in self.per_user.items():
            out[name] = {key: bootstrap_ci(m[key]) for key in ("recall", "ndcg")}
        return out

    def metrics(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "recall": float(m["recall"].mean()),
                "ndcg": float(m["ndcg"].mean()),
                "recall_ci": list(self.intervals[name]["recall"]),
                "ndcg_ci": list(self.intervals[name]["ndcg"]),
                "coverage": self.coverage[name],
            }
            for name, m in self.per_user.items()
        }

    def difference(self, a: str, b: str, key: str = "ndcg") -> tuple[float, float, float]:
        """Mean paired difference a − b over users with its bootstrap interval."""
        d = self.per_user[a][key] - self.per_user[b][key]
        lo, hi = bootstrap_ci(d)
        return float(d.mean()), lo, hi

    def to_json(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "metrics": self.metrics(),
            "calibration": self.calibration,
            "tuning": self.tuning,
        }


def evaluate_problem(
    log: Log,
    problem: Problem,
    make: Any,
    checkpoints: list[float],
    k: int,
    progress: bool,
) -> Table:
    """All systems on `problem`; tuned systems re-tuned at each checkpoint time, each user
    served by the latest checkpoint at or before their split time."""
    ev = make(problem)
    base = Config()
    bucket = np.searchsorted(np.asarray(checkpoints), problem.at, side="right") - 1
    tunings: list[Tuned] = []
    pop_half_lives: list[float] = []
    quiet = lambda p: make(p, progress=False)  # noqa: E731 - one bar per checkpoint instead
    for c in tqdm(checkpoints, desc="tune", unit=" checkpoints", disable=not progress):
        events = before(log, c)
        tunings.append(tune(quiet, log, events, c, base))
        pop_half_lives.append(tune_popularity(quiet, log, events))

    def per_bucket(score_of: Any) -> np.ndarray:
        """[U, I] scores where each user's row comes from their checkpoint's choice."""
        out = np.zeros(problem.positives.shape)
        out[bucket < 0] = score_of(None)[bucket < 0]
        for b in range(len(checkpoints)):
            rows = bucket == b
            if rows.any():
                out[rows] = score_of(b)[rows]
        return out

    default_pop = ours().popularity_half_life
    scores = {
        "popularity": per_bucket(
            lambda b: ev.popularity(default_pop if b is None else pop_half_lives[b])
        ),
        "no_decay": ev.no_decay_scores(),
        "word_only": ev.scores(replace(base, alphas=(1.0, 0.0, 0.0))),
        "sentence_only": ev.scores(replace(base, alphas=(0.0, 1.0, 0.0))),
        "document_only": ev.scores(replace(base, alphas=(0.0, 0.0, 1.0))),
        "seed_fixed_fusion": ev.scores(base),
        "tuned_fusion": per_bucket(lambda b: ev.scores(base if b is None else tunings[b].fusion)),
        # before the first checkpoint there is nothing to tune on: the shipped defaults
        "tuned_fusion_prior": per_bucket(
            lambda b: ev.scores(ours() if b is None else tunings[b].full)
        ),
        "ours": ev.scores(ours()),
    }
    per_user: dict[str, dict[str, np.ndarray]] = {}
    cover: dict[str, float] = {}
    ranked_ours = None
    for name, s in scores.items():
        ranked, recall, ndcg = ev.per_user(s)
        per_user[name] = {"recall": recall, "ndcg": ndcg}
        cover[name] = coverage(ranked, len(log.item_ids))
        if name == "ours":
            ranked_ours = ranked
    assert ranked_ours is not None

    # calibration of `ours`: each user's p from their checkpoint's fit, judged on test
    from streams.config import Settings

    settings = Settings()
    fallback = Calibration(settings.calibration_beta, settings.calibration_bias)
    fits = [t.calibration or fallback for t in tunings]
    # users before the first checkpoint have no earlier data to fit on: not judged
    judged = bucket >= 0
    s_ours = np.take_along_axis(scores["ours"], ranked_ours, axis=1)[judged]
    p = np.zeros_like(s_ours)
    for b in range(len(checkpoints)):
        rows = bucket[judged] == b
        p[rows] = fits[b].p(s_ours[rows])
    hits = np.take_along_axis(problem.positives, ranked_ours, axis=1)[judged]
    latest = tunings[-1].calibration if tunings else None
    calibration = {
        "system": "ours",
        "beta": None if latest is None else latest.beta,
        "bias": None if latest is None else latest.bias,
        "fitted_before": _iso(checkpoints[-1]) if checkpoints else None,
        "ece": expected_calibration_error(p.ravel(), hits.ravel()),
        "mean_p": float(p.mean()),
        "hit_rate": float(hits.mean()),
        "users": int(judged.sum()),
    }
    tuning = [
        {
            "checkpoint": _iso(t.cutoff),
            "users_served": int((bucket == b).sum()),
            "validation_users": t.users,
            "tuned_fusion": asdict(t.fusion),
            "tuned_fusion_prior": asdict(t.full),
            "popularity_half_life_days": pop_half_lives[b],
            "note": t.note,
        }
        for b, t in enumerate(tunings)
    ]
    untuned = int((bucket < 0).sum())
    if untuned:
        tuning.insert(0, {"checkpoint": None, "users_served": untuned, "note": "defaults"})
    return Table(len(problem), per_user, cover, calibration, tuning)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


# ---------------------------------------------------------------------------------------
# The command


@dataclass
class Report:
    k: int
    log: Log
    per_user: Table
    global_: Table | None
    global_users: int
    global_at: float
    seconds: float

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "k": self.k,
            "users": self.per_user.users,
            "items": len(self.log.item_ids),
            "metrics": self.per_user.metrics(),
            "calibration": self.per_user.calibration,
            "tuning": self.per_user.tuning,
            "global_split": None,
            "events": len(self.log),
            "seconds": round(self.seconds, 1),
        }
        if self.global_ is not None:
            out["global_split"] = {"at": _iso(self.global_at), **self.global_.to_json()}
        return out


def run_eval(
    events: str | Path,
    items: str | Path | None,
    encoder: Any,
    k: int = 10,
    limit_users: int | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> Report:
    started = time.perf_counter()
    paths = [Path(items)] if items else []
    log = load_log([*paths, Path(events)], limit_users)
    if not log.item_ids:
        raise ValueError("no item lines with text: nothing to recommend")
    cache = EncodeCache(cache_dir, f"{encoder.spec.name}-{encoder.precision}")
    vectors = encode_texts(log.texts, lambda t, kind: encoder.encode(t, kind=kind), cache)
    table = text_table(vectors, encoder.dim)
    item_vecs = table[log.item_text_key, DOCUMENT, : encoder.dim].astype(np.float64)
    item_vecs /= np.maximum(np.linalg.norm(item_vecs, axis=1, keepdims=True), 1e-12)
    weights = np.array([e.weight() for e in log.encoded], dtype=np.float64)

    def make(problem: Problem, progress: bool = progress) -> Evaluator:
        return Evaluator(log, problem, item_vecs, table, weights, k, progress)

    problem = per_user_split(log)
    if len(problem) == 0:
        raise ValueError("no user has >= 5 train events and a test positive")
    checkpoints = np.quantile(problem.at, CHECKPOINTS).tolist()
    per_user = evaluate_problem(log, problem, make, checkpoints, k, progress)

    t_global = float(np.quantile(log.ts, GLOBAL_QUANTILE))
    g_problem = global_split(log, t_global)
    g_table = None
    if len(g_problem) >= MIN_GLOBAL_USERS:
        g_table = evaluate_problem(log, g_problem, make, [t_global], k, progress)
    return Report(
        k, log, per_user, g_table, len(g_problem), t_global, time.perf_counter() - started
    )


def format_table(table: Table, k: int) -> list[str]:
    m = table.metrics()
    lines = [
        f"  {'system':20s} {'Recall@' + str(k):>24s} {'NDCG@' + str(k):>24s} {'coverage':>9s}",
    ]
    for name in SYSTEMS:
        r = m[name]
        lines.append(
            f"  {name:20s} {r['recall']:.4f} [{r['recall_ci'][0]:.4f}, {r['recall_ci'][1]:.4f}]"
            f" {r['ndcg']:.4f} [{r['ndcg_ci'][0]:.4f}, {r['ndcg_ci'][1]:.4f}]"
            f" {r['coverage']:9.3f}"
        )
    best = max(SYSTEMS, key=lambda s: m[s]["ndcg"])
    lines.append(f"  best NDCG@{k}: {best}")
    for other in ("popularity", "no_decay", "seed_fixed_fusion"):
        d, lo, hi = table.difference("ours", other)
        verdict = "better" if lo > 0 else "worse" if hi < 0 else "no clear difference"
        lines.append(f"  ours − {other}: NDCG {d:+.4f} [{lo:+.4f}, {hi:+.4f}] ({verdict}, 95 % CI)")
    return lines


def format_report(r: Report) -> str:
    log = r.log
    bad = sum(len(rep.bad) for rep in log.reports.values())
    out = [
        f"{len(log):,} user events of {len(log.users):,} users, {len(log.item_ids):,} items"
        f" ({bad} bad lines skipped, {log.duplicates} duplicate event ids,"
        f" {log.unknown_items} clicks on items without text)",
        "",
        f"Per-user chronological split (last 20 % of each user's events): {r.per_user.users} users",
        *format_table(r.per_user, r.k),
    ]
    c, k = r.per_user.calibration, r.k
    if c["beta"] is not None:
        out.append(
            f"  calibration of ours: p = σ({c['beta']:.3f}·s {c['bias']:+.3f}) (fitted on the"
            f" train period before {c['fitted_before']}); test ECE {c['ece']:.4f} over the"
            f" top {k} of {c['users']} users,"
            f" mean p {c['mean_p']:.4f} vs hit rate {c['hit_rate']:.4f}"
        )
    out.append("  tuning (prequential, each user served by the last checkpoint before them):")
    for t in r.per_user.tuning:
        if t["checkpoint"] is None:
            out.append(f"    before the first checkpoint: {t['users_served']} users, defaults")
            continue
        full = Config(**{k: _tuple(v) for k, v in t["tuned_fusion_prior"].items()})
        out.append(
            f"    {t['checkpoint']}: {t['users_served']} users served, tuned on"
            f" {t['validation_users']} validation users: {full.describe()}"
            + (f" ({t['note']})" if t["note"] else "")
        )
    out.append("")
    if r.global_ is None:
        out.append(
            f"Global temporal split at {_iso(r.global_at)}: only {r.global_users} users"
            f" (< {MIN_GLOBAL_USERS}), no table"
        )
    else:
        out.append(
            f"Global temporal split (train before {_iso(r.global_at)}, the 80th percentile"
            f" of event time): {r.global_.users} users"
        )
        out.extend(format_table(r.global_, r.k))
    out.append(f"\n{r.seconds:.0f} s")
    return "\n".join(out)


def _tuple(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--events", required=True, help="JSON Lines replay file (.gz ok)")
    p.add_argument("--items", default=None, help="extra file with item lines")
    p.add_argument("--k", type=int, default=10, help="list length (default 10)")
    p.add_argument(
        "--limit-users", type=int, default=None, metavar="N", help="only the first N user ids"
    )
    p.add_argument(
        "--cache-dir", default="data/eval-cache", help="encodings kept between runs ('' disables)"
    )
    p.add_argument("--json", action="store_true")


def cmd_eval(args: argparse.Namespace, encoder_of: Any) -> int:
    for path in (args.events, args.items):
        if path and not Path(path).is_file():
            print(f"eval: no such file: {path}", file=sys.stderr)
            return 2
    if args.k < 1 or (args.limit_users is not None and args.limit_users < 1):
        print("eval: --k and --limit-users must be at least 1", file=sys.stderr)
        return 2
    try:
        report = run_eval(
            args.events,
            args.items,
            encoder_of(args),
            k=args.k,
            limit_users=args.limit_users,
            cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        )
    except ValueError as err:
        print(f"eval: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0
