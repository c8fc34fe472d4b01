"""The popularity prior in the read side (streams/api.py) on a real Qdrant (local mode).

Recommendations rank by similarity + γ·prior over the top `prior_candidates` by similarity
and the top by popularity (docs/evaluation.md). The vectors here are built so that the
answer is known.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from streams.api import ReadSide
from streams.popularity import Popularity
from streams.ranking_metrics import Calibration
from streams.record import UserRecord
from streams.sink import ItemPoint, QdrantSink
from streams.state import EncodedEvent, StateParams, summarize

pytestmark = pytest.mark.integration

DIM = 8


def direction(*xy: float) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[: len(xy)] = xy
    return v / np.linalg.norm(v)


# the user clicked "seen" (along x); "near" is almost that, "mid" a little further,
# "far" points elsewhere but everyone clicks it
ITEMS = {
    "seen": direction(1.0, 0.0),
    "near": direction(1.0, 0.1),
    "mid": direction(1.0, 0.4),
    "far": direction(0.0, 1.0),
}


async def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


@pytest.fixture(params=["local", "edge"])
def sink(tmp_path, request):
    with QdrantSink(DIM, path=tmp_path / "qdrant", engine=request.param) as s:
        s.ensure_collections()
        s.upsert_items([ItemPoint(i, v, {"item_id": i, "title": i}) for i, v in ITEMS.items()])
        yield s


def read_side(sink: QdrantSink, weight: float, candidates: int) -> ReadSide:
    record = UserRecord.new(DIM, StateParams())
    for t in range(3):
        text = summarize(document_vector=ITEMS["seen"].astype(np.float64))
        record.state.update(EncodedEvent("click", float(t), text, item_id="seen"))
    popularity = Popularity()
    for t, item in enumerate(["far"] * 9 + ["mid"] * 3):
        popularity.add(item, float(t))
    return ReadSide(
        sink,
        _run,
        lambda user_id: record if user_id == "u1" else None,
        popularity,
        Calibration(11.6, -15.47),
        prior_weight=weight,
        prior_candidates=candidates,
    )


def ranked(read: ReadSide, k: int = 3) -> list[tuple[str, float, Any]]:
    doc = asyncio.run(read.recommendations("u1", {"k": str(k)}))
    return [(it["item_id"], it["score"], it["why"].get("popularity_prior")) for it in doc["items"]]


def test_without_a_prior_similarity_decides(sink):
    assert [i for i, _, _ in ranked(read_side(sink, 0.0, 100))] == ["near", "mid", "far"]


def test_the_prior_lifts_popular_items_by_gamma_times_their_prior(sink):
    out = ranked(read_side(sink, 0.2, 100))
    assert [i for i, _, _ in out] == ["mid", "near", "far"]
    priors = {i: q for i, _, q in out}
    assert priors["far"] == pytest.approx(1.0) and priors["near"] == 0.0
    assert priors["mid"] == pytest.approx(np.log1p(3) / np.log1p(9), abs=1e-4)
    scores = {i: s for i, s, _ in out}
    cos_mid = float(ITEMS["mid"] @ ITEMS["seen"])
    assert scores["mid"] == pytest.approx(cos_mid + 0.2 * priors["mid"], abs=1e-5)


def test_popular_items_outside_the_similarity_shortlist_still_compete(sink):
    # k = 1: one candidate by similarity ("near"), one by popularity ("far", least similar)
    assert [i for i, _, _ in ranked(read_side(sink, 0.0, 1), k=1)] == ["near"]
    assert [i for i, _, _ in ranked(read_side(sink, 2.0, 1), k=1)] == ["far"]
