"""Property tests of streams.state against an independent oracle (river's style).

The oracle recomputes everything from the full event list directly from the definition,
at query time t: S_g(t) = Σ c_i x_i exp(−λ_g (t − t_i)), no anchor, no re-anchoring, no
incremental arithmetic. Vectors come from a seeded numpy RNG (hypothesis draws the seeds
and the structure) so no two inputs cancel exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streams.state as state_module
from streams.fusion import fuse
from streams.state import (
    CHANNELS,
    DAY,
    DEFAULT_PARAMS,
    KINDS,
    EncodedEvent,
    EventBatch,
    InterestState,
    StateDecodeError,
    StateParams,
    apply_batch,
    event_weight,
    summarize,
)

DIM = 8
YEAR = 365.25 * DAY
VOCAB = [f"w{i}" for i in range(30)]  # <= max_terms: the top terms are exact
ITEMS = [f"i{i}" for i in range(60)]  # > max_items: exercises eviction (count-bound)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Raw:
    """One event with its raw (unsummarised) vectors, for the oracle."""

    kind: str
    ts: float
    words: list[str]
    word_vectors: np.ndarray
    sentence_vectors: np.ndarray
    document_vector: np.ndarray | None
    item_id: str | None
    dwell_s: float | None
    rating: int | None
    sentiment: float | None
    topic: str = "events.click"
    partition: int = 0

    def encoded(self, offset: int | None) -> EncodedEvent:
        has_text = (
            self.document_vector is not None
            or len(self.word_vectors) > 0
            or len(self.sentence_vectors) > 0
        )
        text = (
            summarize(
                self.words, self.word_vectors, self.sentence_vectors, self.document_vector, dim=DIM
            )
            if has_text
            else None
        )
        return EncodedEvent(
            self.kind,
            self.ts,
            text,
            self.item_id,
            self.dwell_s,
            self.rating,
            self.sentiment,
            self.topic,
            self.partition,
            offset,
        )


_KIND = st.sampled_from(KINDS)
_WORD = st.sampled_from(VOCAB)
_ITEM = st.none() | st.sampled_from(ITEMS)
_DWELL = st.none() | st.floats(0, 600)
_RATING = st.none() | st.integers(1, 5)
_SENTIMENT = st.none() | st.floats(-1, 1)
_TOPIC = st.sampled_from(["events.click", "events.comment"])
_SHAPE = st.tuples(st.lists(_WORD, max_size=4), st.integers(0, 2), st.booleans())


@st.composite
def raw_events(draw, n_min=1, n_max=25, t_max=1e7, t0=0.0, partitions=2):
    """Events whose structure hypothesis draws; vector values come from a seeded RNG."""
    n = draw(st.integers(n_min, n_max))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    times = st.floats(0, t_max, allow_nan=False)
    out = []
    for _ in range(n):
        words, n_sent, with_doc = draw(_SHAPE)
        out.append(
            Raw(
                kind=draw(_KIND),
                ts=t0 + draw(times),
                words=words,
                word_vectors=rng.standard_normal((len(words), DIM)) * rng.uniform(0.1, 5),
                sentence_vectors=rng.standard_normal((n_sent, DIM)),
                document_vector=rng.standard_normal(DIM) * 3 if with_doc else None,
                item_id=draw(_ITEM),
                dwell_s=draw(_DWELL),
                rating=draw(_RATING),
                sentiment=draw(_SENTIMENT),
                topic=draw(_TOPIC),
                partition=draw(st.integers(0, partitions - 1)),
            )
        )
    return out


@st.composite
def seeded_events(draw, n_min, n_max, t_max, t0=0.0):
    """Many events cheaply: hypothesis draws only the size and the seed."""
    n = draw(st.integers(n_min, n_max))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    out = []
    for _ in range(n):
        n_words, n_sent = int(rng.integers(0, 5)), int(rng.integers(0, 3))
        rated = rng.random() < 0.3
        out.append(
            Raw(
                kind=KINDS[int(rng.integers(0, 3))],
                ts=t0 + float(rng.uniform(0, t_max)),
                words=[VOCAB[i] for i in rng.integers(0, len(VOCAB), n_words)],
                word_vectors=rng.standard_normal((n_words, DIM)),
                sentence_vectors=rng.standard_normal((n_sent, DIM)),
                document_vector=rng.standard_normal(DIM) if rng.random() < 0.8 else None,
                item_id=ITEMS[int(rng.integers(0, len(ITEMS)))] if rng.random() < 0.7 else None,
                dwell_s=float(rng.uniform(0, 300)) if rng.random() < 0.5 else None,
                rating=int(rng.integers(1, 6)) if rated else None,
                sentiment=float(rng.uniform(-1, 1)) if not rated and rng.random() < 0.3 else None,
                topic=("events.click", "events.comment")[int(rng.integers(0, 2))],
                partition=int(rng.integers(0, 2)),
            )
        )
    return out


def with_offsets(raws: list[Raw]) -> list[EncodedEvent]:
    """Offsets in arrival order per (topic, partition), as Kafka assigns them."""
    next_offset: dict[tuple[str, int], int] = {}
    out = []
    for r in raws:
        key = (r.topic, r.partition)
        next_offset[key] = next_offset.get(key, 99) + 1
        out.append(r.encoded(next_offset[key]))
    return out


def unit(x: np.ndarray) -> np.ndarray:
    scale = np.abs(x).max()  # no underflow for tiny vectors
    return (x / scale) / np.linalg.norm(x / scale)


def oracle(raws: list[Raw], t: float, p: StateParams) -> dict:
    """Everything recomputed from scratch at time t, straight from the definitions.

    Directions do not depend on t; they are summed relative to each channel's newest
    contribution so that they stay defined however old that is.
    """
    lam = [
        math.log(2) / h
        for h in (
            p.half_life_word,
            p.half_life_sentence,
            p.half_life_document,
            p.half_life_negative,
        )
    ]
    parts: list[list[tuple[float, float, np.ndarray]]] = [[], [], [], []]  # (t_i, w_i, x_i)
    terms: dict[str, float] = {}
    items: dict[str, int] = {}
    counts = dict.fromkeys(("click", "search", "comment", "negative"), 0)
    for r in raws:
        w = event_weight(
            r.kind, dwell_s=r.dwell_s, rating=r.rating, sentiment=r.sentiment, params=p
        )
        counts[r.kind] += 1
        counts["negative"] += w < 0
        if r.item_id is not None:
            items[r.item_id] = max(items.get(r.item_id, 0), math.floor(r.ts))
        if w > 0:
            if len(r.word_vectors):
                parts[0].append((r.ts, w, np.mean([unit(x) for x in r.word_vectors], axis=0)))
                for word in r.words:
                    terms[word] = terms.get(word, 0.0) + w * math.exp(-lam[0] * (t - r.ts)) / len(
                        r.word_vectors
                    )
            if len(r.sentence_vectors):
                parts[1].append((r.ts, w, np.mean([unit(x) for x in r.sentence_vectors], 0)))
            if r.document_vector is not None:
                parts[2].append((r.ts, w, unit(r.document_vector)))
        elif w < 0 and r.document_vector is not None:
            parts[3].append((r.ts, -w, unit(r.document_vector)))
    vectors: list[np.ndarray | None] = []
    weights = np.zeros(4)
    for g, contributions in enumerate(parts):
        if not contributions:
            vectors.append(None)
            continue
        newest = max(ti for ti, _, _ in contributions)
        s = sum(wi * math.exp(-lam[g] * (newest - ti)) * x for ti, wi, x in contributions)
        vectors.append(unit(s))
        weights[g] = sum(wi * math.exp(-lam[g] * (t - ti)) for ti, wi, _ in contributions)
    ranked = sorted(items.items(), key=lambda kv: (-kv[1], kv[0]))[: p.max_items]
    return {
        "vectors": vectors,
        "weights": weights,
        "terms": terms,
        "items": [k for k, _ in ranked],
        "counts": counts,
        "first": min(r.ts for r in raws) if raws else None,
        "last": max(r.ts for r in raws) if raws else None,
    }


def snapshot(state: InterestState, t: float) -> dict:
    vecs = state.vectors()
    present = state.present()
    return {
        "vectors": [vecs[g] if present[g] else None for g in range(4)],
        "weights": state.weights(t),
        "terms": dict(state.top_terms(t=t)),
        "items": state.seen_items(),
        "counts": state.counts,
        "first": state.first_ts,
        "last": state.last_ts,
    }


def assert_same(
    a: dict, b: dict, vec_atol: float = 1e-9, rtol: float = 1e-9, tiny: float = 0.0
) -> None:
    """Equal snapshots; channels whose weight in `b` is below `tiny` are not compared."""
    for g, (x, y) in enumerate(zip(a["vectors"], b["vectors"], strict=True)):
        if b["weights"][g] < tiny:
            continue
        assert (x is None) == (y is None), f"channel {g} present in only one"
        if x is not None:
            np.testing.assert_allclose(x, y, atol=vec_atol, err_msg=f"channel {g}")
    np.testing.assert_allclose(a["weights"], b["weights"], rtol=rtol, atol=max(tiny, 1e-300))
    a_terms = {k: v for k, v in a["terms"].items() if v > tiny}  # underflowed: dropped
    b_terms = {k: v for k, v in b["terms"].items() if v > tiny}
    assert a_terms.keys() == b_terms.keys()
    for k in a_terms:
        assert a_terms[k] == pytest.approx(b_terms[k], rel=max(rtol, 1e-6))
    assert a["items"] == b["items"]
    assert a["counts"] == b["counts"]
    assert a["first"] == b["first"] and a["last"] == b["last"]


def build(events: list[EncodedEvent], p: StateParams = DEFAULT_PARAMS) -> InterestState:
    state = InterestState(DIM, p)
    for ev in events:
        assert state.update(ev)
    return state


# --------------------------------------------------------------------------------------


@FAST
@given(raws=raw_events(n_max=30))
def test_incremental_equals_recompute_on_every_prefix(raws):
    state = InterestState(DIM)
    events = with_offsets(raws)
    for k, ev in enumerate(events, start=1):
        assert state.update(ev)
        t = max(r.ts for r in raws[:k])
        assert_same(snapshot(state, t), oracle(raws[:k], t, state.params))


@FAST
@given(raws=raw_events(n_min=2), data=st.data())
def test_any_arrival_order_gives_the_same_state(raws, data):
    perm = data.draw(st.permutations(range(len(raws))))
    shuffled = [raws[i] for i in perm]
    t = max(r.ts for r in raws) + DAY
    a, b = build(with_offsets(raws)), build(with_offsets(shuffled))
    assert_same(snapshot(a, t), snapshot(b, t))
    assert a.offsets == b.offsets


@FAST
@given(raws=raw_events(), data=st.data())
def test_replayed_offsets_change_nothing(raws, data):
    events = with_offsets(raws)
    state = build(events)
    before = state.to_bytes()
    replay = data.draw(st.lists(st.sampled_from(events), min_size=1, max_size=10))
    assert not any(state.update(ev) for ev in replay)
    assert state.to_bytes() == before
    batch = EventBatch.from_events([0] * len(replay), replay, DIM)
    assert not apply_batch([state], batch).any()
    assert state.to_bytes() == before


@FAST
@given(raws=raw_events(), gap=st.floats(0, 5 * YEAR))
def test_without_events_directions_hold_and_weights_decay_exactly(raws, gap):
    state = build(with_offsets(raws))
    t0 = max(r.ts for r in raws)
    fused, vecs = state.fused(), state.vectors()
    lam = state.params.decay_rates
    np.testing.assert_allclose(
        state.weights(t0 + gap), state.weights(t0) * np.exp(-lam * gap), rtol=1e-12, atol=0
    )
    # time passing (an event without text, which may re-anchor) moves no direction
    state.update(EncodedEvent("click", t0 + gap, item_id="x"))
    assert state.present().tolist() == (np.linalg.norm(vecs, axis=1) > 0).tolist()
    np.testing.assert_allclose(state.vectors(), vecs, atol=1e-9)
    if fused is not None:
        np.testing.assert_allclose(state.fused(), fused, atol=1e-9)


@FAST
@given(
    half_lives=st.tuples(*[st.floats(60, 400 * DAY)] * 4),
    t0=st.floats(0, 2e9),
    w=st.sampled_from(["click", "search", "comment"]),
)
def test_weight_halves_after_one_half_life(half_lives, t0, w):
    p = StateParams(*half_lives)
    state = InterestState(DIM, p)
    rng = np.random.default_rng(0)
    text = summarize(
        ["a"],
        rng.standard_normal((1, DIM)),
        rng.standard_normal((1, DIM)),
        rng.standard_normal(DIM),
    )
    state.update(EncodedEvent(w, t0, text))
    base = p.type_weight(w)
    for g in range(3):
        # float64 cannot say t0 + half-life more exactly than one ulp of it, and the
        # weight's relative error is λ times the time error: allow a few of those
        lam = float(p.decay_rates[g])
        rel = 1e-12 + 4 * lam * float(np.spacing(t0 + 2 * half_lives[g]))
        assert state.weights(t0 + half_lives[g])[g] == pytest.approx(base / 2, rel=rel)
        assert state.weights(t0 + 2 * half_lives[g])[g] == pytest.approx(base / 4, rel=rel)


@FAST
@given(raws=raw_events(n_max=40) | raw_events(n_max=40, partitions=4), data=st.data())
def test_batch_apply_equals_sequential_apply(raws, data):
    """Also with more (topic, partition) sources than a state remembers (evictions)."""
    n_users = data.draw(st.integers(1, 4))
    users = [data.draw(st.integers(0, n_users - 1)) for _ in raws]
    events = with_offsets(raws)
    # replays: some events delivered twice, later in the stream
    for i in data.draw(st.lists(st.integers(0, len(events) - 1), max_size=5)):
        pos = data.draw(st.integers(i + 1, len(events)))
        events.insert(pos, events[i])
        users.insert(pos, users[i])
    sequential = [InterestState(DIM) for _ in range(n_users)]
    expected = [sequential[u].update(ev) for u, ev in zip(users, events, strict=True)]
    batched = [InterestState(DIM) for _ in range(n_users)]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=4)))
    got = []
    for a, b in zip([0, *cuts], [*cuts, len(events)], strict=True):
        batch = EventBatch.from_events(users[a:b], events[a:b], DIM)
        got += apply_batch(batched, batch).tolist()
    assert got == expected
    t = max(r.ts for r in raws)
    for s, b in zip(sequential, batched, strict=True):
        assert_same(snapshot(s, t), snapshot(b, t))
        assert s.offsets == b.offsets


@FAST
@given(
    raws=seeded_events(1, 150, t_max=30 * DAY, t0=1.7e9),
    n_users=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_batch_sums_each_users_events_bit_for_bit_however_chunked(raws, n_users, seed):
    """`apply_batch` sums float32 rows user by user in arrival order, however it chunks.

    The reference sums every user with two or more events with one `rows.sum(axis=0)`
    (`_LONG = 1`), as a loop over users would; the other settings add the users of a chunk
    together, step by step (`_FEW = 0`: small batches too). Signed zeros too: -0.0 inputs
    on -0.0 states.
    """
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, len(raws)).tolist()
    if n_users > 1:
        users[: len(users) // 3] = [0] * (len(users) // 3)  # a heavy user: > _LONG events
    batch = EventBatch.from_events(users, with_offsets(raws), DIM, dtype=np.float32)
    vectors = np.where(rng.random(batch.vectors.shape) < 0.05, -0.0, batch.vectors)
    batch = EventBatch(**{**batch.__dict__, "vectors": vectors.astype(np.float32)})
    results = []
    defaults = (state_module._CHUNK, state_module._LONG, state_module._FEW)
    for chunk, long, few in (defaults, (defaults[0], defaults[1], 0), (3, 2, 0), (10**9, 1, 0)):
        states = [InterestState(DIM) for _ in range(n_users)]
        for s in states:
            s._SW[:, ::3] = -0.0
        with (
            mock.patch.object(state_module, "_CHUNK", chunk),
            mock.patch.object(state_module, "_LONG", long),
            mock.patch.object(state_module, "_FEW", few),
        ):
            applied = apply_batch(states, batch)
        results.append((applied.tolist(), [s._SW.tobytes() + s.to_bytes() for s in states]))
    assert all(r == results[-1] for r in results)


@FAST
@given(raws=raw_events())
def test_serialization_round_trip_within_float16(raws):
    state = build(with_offsets(raws))
    data = state.to_bytes()
    back = InterestState.from_bytes(data)
    t = max(r.ts for r in raws)
    assert_same(snapshot(back, t), snapshot(state, t), vec_atol=1e-3, rtol=1e-6)
    assert back.offsets == state.offsets
    assert back.t_ref == state.t_ref
    again = InterestState.from_bytes(back.to_bytes())
    assert_same(snapshot(again, t), snapshot(back, t), vec_atol=1e-3, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(raws=raw_events(n_max=30))
def test_oracle_holds_through_a_round_trip_after_every_event(raws):
    """float16 directions: the error stays at the float16 scale, it does not pile up."""
    state = InterestState(DIM)
    for k, ev in enumerate(with_offsets(raws), start=1):
        state.update(ev)
        state = InterestState.from_bytes(state.to_bytes())
        t = max(r.ts for r in raws[:k])
        assert_same(snapshot(state, t), oracle(raws[:k], t, state.params), vec_atol=3e-3, rtol=1e-6)


@FAST
@given(raws=raw_events(n_max=8), data=st.data())
def test_corrupt_or_truncated_bytes_raise_the_typed_error(raws, data):
    good = build(with_offsets(raws)).to_bytes()
    i = data.draw(st.integers(0, len(good) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = bytearray(good)
    bad[i] ^= flip
    with pytest.raises(StateDecodeError):
        InterestState.from_bytes(bytes(bad))
    cut = data.draw(st.integers(0, len(good) - 1))
    with pytest.raises(StateDecodeError):
        InterestState.from_bytes(good[:cut])
    with pytest.raises(StateDecodeError):
        InterestState.from_bytes(good + data.draw(st.binary(min_size=1, max_size=8)))
    junk = data.draw(st.binary(max_size=5000))
    with pytest.raises(StateDecodeError):
        InterestState.from_bytes(junk)


@settings(max_examples=30, deadline=None)
@given(
    raws=raw_events(n_min=20, n_max=60, t_max=10 * YEAR, t0=1.7e9)
    | seeded_events(100, 400, t_max=12 * YEAR, t0=1.7e9),
    sort=st.booleans(),
)
def test_ten_years_of_events_reanchor_without_overflow_and_match_the_oracle(raws, sort):
    if sort:
        raws = sorted(raws, key=lambda r: r.ts)
    t = max(r.ts for r in raws)
    rare = StateParams(reanchor_at=600.0)  # re-anchors ~30x less often
    for p in (StateParams(), rare):
        state = InterestState(DIM, p)
        with np.errstate(over="raise", invalid="raise"):
            for ev in with_offsets(raws):
                state.update(ev)
                assert state.params.decay_rates.max() * (ev.ts - state.t_ref) <= p.reanchor_at
        assert np.isfinite(state._S).all() and np.isfinite(state._W).all()
        # A channel whose newest contribution is ~9 years older than the anchor underflows
        # to zero (its weight is below 1e-300 of a fresh one); those are not compared.
        assert_same(snapshot(state, t), oracle(raws, t, p), vec_atol=1e-8, rtol=1e-8, tiny=1e-250)


@FAST
@given(raws=raw_events(n_max=30) | raw_events(n_max=12, t_max=10 * YEAR))
def test_named_vectors_are_the_unit_channels_and_their_fusion(raws):
    """`named_vectors` (norms taken once, for the Qdrant points) gives bit for bit what
    `vectors`, `present` and `fuse` give, tiny decayed channels included."""
    state = build(with_offsets(raws))
    named = state.named_vectors()
    unit, present = state.vectors(), state.present()
    for g, channel in enumerate(CHANNELS):
        assert (named[channel] is None) == (not present[g]), channel
        if present[g]:
            np.testing.assert_array_equal(named[channel], unit[g], err_msg=channel)
    fused = fuse(unit[:3], present[:3], state.params.alphas)
    assert (named["fused"] is None) == (fused is None)
    if fused is not None:
        np.testing.assert_array_equal(named["fused"], fused)


SCALES = [0.0, 1e-320, 1e-300, 1e-160, 1e-10, 1.0, 1e150, 1e200, math.inf, math.nan]


@FAST
@given(scales=st.lists(st.sampled_from(SCALES), min_size=1, max_size=4), seed=st.integers(0, 99))
def test_row_norm_list_is_the_careful_row_norms(scales, seed):
    """The cheap norms of `to_bytes` and `named_vectors` equal `_row_norms` bit for bit:
    zero rows (absent channels), rows whose squares underflow or overflow, inf and NaN."""
    rows = np.random.default_rng(seed).standard_normal((len(scales), DIM))
    x = rows * np.array(scales)[:, None]
    x[np.array(scales) == 0.0] = 0.0  # 0 * inf or nan aside: a zero row is all zeros
    with np.errstate(invalid="ignore", over="ignore"):  # inf / inf in the careful path
        got, want = state_module._row_norm_list(x), state_module._row_norms(x).tolist()
    np.testing.assert_array_equal(np.array(got), np.array(want))
