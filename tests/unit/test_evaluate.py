"""The offline evaluation (streams/evaluate.py, eval_data.py) on synthetic logs.

A stand-in encoder maps the topic words "sport" and "cook" to two orthogonal directions, so
the right answer is known: users who click one topic should be recommended that topic, and
an interest-vector system must beat popularity here. The real encoder on MovieLens-100k
runs in tests/integration/test_eval_movielens.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from stand_ins import Encoded

from streams import evaluate
from streams.eval_data import (
    EncodeCache,
    encode_texts,
    global_split,
    load_log,
    per_user_split,
)
from streams.evaluate import SYSTEMS, popularity_at, run_eval, tune

DIM = 16
DAY = 86_400.0
T0 = 1_700_000_000.0


def _noise(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(DIM) * 0.3


def _topic_vec(text: str) -> np.ndarray:
    v = _noise(text)
    v[0] += 3.0 * ("sport" in text)
    v[1] += 3.0 * ("cook" in text)
    return (v / np.linalg.norm(v)).astype(np.float32)


class TopicEncoder:
    dim = DIM
    precision = "fp32"
    spec = SimpleNamespace(name="topic-stand-in")

    def __init__(self) -> None:
        self.texts = 0

    def encode(self, texts: list[str], kind: str = "passage") -> list[Encoded]:
        self.texts += len(texts)
        out = []
        for t in texts:
            words = tuple(t.split())
            out.append(
                Encoded(
                    words,
                    np.stack([_topic_vec(w) for w in words]),
                    _topic_vec(t)[None, :],
                    _topic_vec(t),
                )
            )
        return out


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


def topic_log(tmp_path: Path, users: int = 60, clicks: int = 15, seed: int = 0) -> Path:
    """Items: 20 sport, 20 cook; item "pop" is clicked by everyone first (popularity's
    favourite). Each user clicks their own topic 90 % of the time over 60 days."""
    rng = np.random.default_rng(seed)
    lines: list[Any] = [
        {"type": "item", "item_id": f"{t}{i}", "title": f"{t} story {i}", "body": f"all {t}"}
        for t in ("sport", "cook")
        for i in range(20)
    ]
    lines.append({"type": "item", "item_id": "pop", "title": "celebrity gossip", "body": "news"})
    for u in range(users):
        mine, other = ("sport", "cook") if u % 2 else ("cook", "sport")
        start = T0 + rng.uniform(0, 30) * DAY
        lines.append(
            {
                "type": "click",
                "event_id": f"e{u}-p",
                "user_id": f"u{u}",
                "item_id": "pop",
                "ts": start - 60,
            }
        )
        picks = rng.permutation(20)[:clicks]
        for j, i in enumerate(picks):
            topic = mine if rng.uniform() < 0.9 else other
            lines.append(
                {
                    "type": "click",
                    "event_id": f"e{u}-{j}",
                    "user_id": f"u{u}",
                    "item_id": f"{topic}{i}",
                    "ts": start + j * DAY,
                    "rating": 5,
                }
            )
    return _write(tmp_path / "log.jsonl", lines)


# ---------------------------------------------------------------------------------------
# Splits and leakage


def test_per_user_split_takes_the_last_fifth_and_keeps_users_with_enough_history(tmp_path):
    lines: list[Any] = [
        {"type": "item", "item_id": str(i), "title": f"item {i}"} for i in range(12)
    ]
    # u1: 10 clicks -> 8 train, 2 test (item 8 rated 2: not a positive; item 9 positive)
    for i in range(10):
        rating = 2 if i == 8 else 5
        lines.append(
            {
                "type": "click",
                "event_id": f"a{i}",
                "user_id": "u1",
                "item_id": str(i),
                "ts": T0 + i,
                "rating": rating,
            }
        )
    # u2: 5 clicks -> 4 train (< 5): not evaluated
    for i in range(5):
        lines.append(
            {"type": "click", "event_id": f"b{i}", "user_id": "u2", "item_id": str(i), "ts": T0 + i}
        )
    # u3: 7 clicks, the test click is a re-click of a train item: no positive left
    for i in range(6):
        lines.append(
            {"type": "click", "event_id": f"c{i}", "user_id": "u3", "item_id": str(i), "ts": T0 + i}
        )
    lines.append({"type": "click", "event_id": "c6", "user_id": "u3", "item_id": "0", "ts": T0 + 6})
    lines.append("not json")
    log = load_log([_write(tmp_path / "s.jsonl", lines)])
    assert sum(len(r.bad) for r in log.reports.values()) == 1
    p = per_user_split(log)
    assert [log.users[u] for u in p.users] == ["u1"]
    assert p.at.tolist() == [T0 + 8]
    assert np.flatnonzero(p.positives[0]).tolist() == [log.item_ids.index("9")]
    assert p.seen[0].sum() == 8 and len(p.train) == 8


def test_global_split_reads_every_state_at_the_cut(tmp_path):
    log = load_log([topic_log(tmp_path, users=20)])
    t = float(np.quantile(log.ts, 0.8))
    p = global_split(log, t)
    assert len(p) > 0 and (p.at == t).all()
    assert (log.ts[p.train] < t).all()


def test_popularity_counts_only_clicks_before_the_read_time(tmp_path):
    lines: list[Any] = [{"type": "item", "item_id": i, "title": i} for i in ("a", "b")]
    for n, (item, ts) in enumerate([("a", 0), ("a", 10), ("b", 20)]):
        lines.append(
            {
                "type": "click",
                "event_id": f"e{n}",
                "user_id": f"u{n}",
                "item_id": item,
                "ts": T0 + ts,
            }
        )
    log = load_log([_write(tmp_path / "p.jsonl", lines)])
    at = np.array([T0 + 10, T0 + 21, T0])
    pop = popularity_at(log, at, half_life=1e6)  # ~ no decay
    assert pop.round(6).tolist() == [[1.0, 0.0], [2.0, 1.0], [0.0, 0.0]]


def test_tuning_never_looks_past_its_cutoff(tmp_path):
    """Rewriting every event after the cutoff leaves the tuned settings unchanged."""
    a = load_log([topic_log(tmp_path, users=60, seed=1)])
    cutoff = float(np.quantile(a.ts, 0.6))
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    for ln in lines:
        if ln["type"] == "click" and ln["ts"] >= cutoff:
            ln["item_id"] = "pop"  # the future now says: only popularity matters
    b = load_log([_write(tmp_path / "b.jsonl", lines)])
    enc = TopicEncoder()

    def tuned(log: Any) -> Any:
        vectors = encode_texts(log.texts, lambda t, k: enc.encode(t, k), EncodeCache(None, "x"))
        make = _maker(log, vectors)
        return tune(
            lambda p: make(p), log, np.flatnonzero(log.ts < cutoff), cutoff, evaluate.Config()
        )

    ta, tb = tuned(a), tuned(b)
    assert ta.users >= evaluate.MIN_TUNE_USERS
    assert (ta.fusion, ta.full) == (tb.fusion, tb.full)


def _maker(log: Any, vectors: list[Any]) -> Any:
    from streams.eval_data import text_table

    table = text_table(vectors, DIM)
    items = table[log.item_text_key, 2, :DIM].astype(np.float64)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    weights = np.array([e.weight() for e in log.encoded])
    return lambda p: evaluate.Evaluator(log, p, items, table, weights, 10, progress=False)


# ---------------------------------------------------------------------------------------
# The whole run


def test_interest_vectors_beat_popularity_when_topics_decide(tmp_path):
    enc = TopicEncoder()
    r = run_eval(topic_log(tmp_path), None, enc, k=5, cache_dir=tmp_path / "cache", progress=False)
    m = r.per_user.metrics()
    assert set(m) == set(SYSTEMS)
    assert r.per_user.users == 60
    for name in SYSTEMS:
        lo, hi = m[name]["ndcg_ci"]
        assert lo <= m[name]["ndcg"] <= hi
    assert m["ours"]["ndcg"] > m["popularity"]["ndcg"] + 0.2
    _, lo, _ = r.per_user.difference("ours", "popularity")
    assert lo > 0
    # every distinct text encoded once; a second run reads them from the cache
    assert enc.texts == 41
    again = TopicEncoder()
    run_eval(topic_log(tmp_path), None, again, k=5, cache_dir=tmp_path / "cache", progress=False)
    assert again.texts == 0


def test_eval_command_prints_the_documented_json(tmp_path, capsys):
    events = topic_log(tmp_path, users=40)
    args = SimpleNamespace(
        events=str(events), items=None, k=10, limit_users=30, json=True, cache_dir=""
    )
    assert evaluate.cmd_eval(args, lambda _: TopicEncoder()) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["k"] == 10 and out["items"] == 41 and out["users"] == 30
    assert set(out["metrics"]) == set(SYSTEMS)
    for m in out["metrics"].values():
        assert set(m) >= {"recall", "ndcg", "recall_ci", "ndcg_ci"}
    assert out["calibration"]["system"] == "ours"


@pytest.mark.parametrize(
    ("events", "message"),
    [("missing.jsonl", "no such file"), ("empty.jsonl", "no item lines")],
)
def test_eval_command_explains_bad_input(tmp_path, capsys, events, message):
    _write(tmp_path / "empty.jsonl", ['{"type": "delete", "user_id": "u1"}'])
    args = SimpleNamespace(
        events=str(tmp_path / events), items=None, k=10, limit_users=None, json=False, cache_dir=""
    )
    assert evaluate.cmd_eval(args, lambda _: TopicEncoder()) in (1, 2)
    assert message in capsys.readouterr().err
