"""Example-based tests of streams.state and streams.fusion (properties: test_state_properties)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from streams.fusion import fuse
from streams.state import (
    CHANNELS,
    DAY,
    EncodedEvent,
    EventBatch,
    InterestState,
    StateDecodeError,
    StateParams,
    TextVectors,
    apply_batch,
    event_weight,
    summarize,
)

D = 384


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def make_text(rng, n_words=3, n_sent=2, words=None, dim=D) -> TextVectors:
    words = words if words is not None else [f"w{i}" for i in range(n_words)]
    return summarize(
        words,
        rng.standard_normal((len(words), dim)).astype(np.float32),
        rng.standard_normal((n_sent, dim)).astype(np.float32),
        rng.standard_normal(dim).astype(np.float32),
    )


def unit(x):
    return x / np.linalg.norm(x)


# -- weights ----------------------------------------------------------------------------


def test_event_weights_follow_the_documented_formulas():
    assert event_weight("click") == 1.0
    assert event_weight("search") == 0.7
    assert event_weight("comment") == 1.2
    assert event_weight("click", dwell_s=30) == pytest.approx(1.0)
    assert event_weight("click", dwell_s=0.5) == 0.25  # bounce: floor
    assert event_weight("click", dwell_s=10 * 3600) == 2.0  # cap
    assert [event_weight("click", rating=r) for r in (1, 2, 3, 4, 5)] == pytest.approx(
        [-1.0, -0.5, 1 / 3, 2 / 3, 1.0]
    )
    assert event_weight("comment", sentiment=0.0) == 1.2
    assert event_weight("comment", sentiment=-1.0) == -1.2
    assert event_weight("comment", rating=5, sentiment=-1.0) == 1.2  # rating wins
    assert event_weight("search", params=StateParams(weight_search=2.0)) == 2.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rating": 0},
        {"rating": 6},
        {"rating": math.nan},
        {"sentiment": 1.5},
        {"dwell_s": -1.0},
        {"dwell_s": math.inf},
    ],
)
def test_event_weight_rejects_out_of_range_inputs(kwargs):
    with pytest.raises(ValueError):
        event_weight("click", **kwargs)


def test_unknown_kind_and_bad_params_are_rejected():
    with pytest.raises(ValueError):
        event_weight("like")
    with pytest.raises(ValueError):
        StateParams(half_life_word=0)
    with pytest.raises(ValueError):
        StateParams(max_terms=300)


# -- summarize --------------------------------------------------------------------------


def test_summarize_normalises_rows_skips_zero_rows_and_keys_terms():
    tv = summarize(
        ["Go", "go", "the", "x" * 30],
        np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0], [0.0, 2.0]]),
        np.array([[0.0, 9.0]]),
        np.array([0.0, 0.0]),
    )
    assert tv.n_words == 3  # the zero row does not count
    np.testing.assert_allclose(tv.word_sum, [0.6 + 1.0, 0.8 + 1.0])
    assert tv.terms == (("go", 1), ("the", 1))  # casefolded; zero row and over-long dropped
    assert tv.n_sentences == 1 and not tv.has_document
    assert summarize(word_vectors=np.ones((2, 3), np.float32)).word_sum.dtype == np.float32


def test_summarize_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        summarize(["a", "b"], np.ones((1, 4)))
    with pytest.raises(ValueError):
        summarize(word_vectors=np.ones((1, 4)), sentence_vectors=np.ones((1, 5)))
    with pytest.raises(ValueError):
        summarize(word_vectors=np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError):
        summarize()


def test_text_vectors_of_an_encoded_text_duck_type(rng):
    class Encoded:  # the shape of encoders.EncodedText, without importing it
        words = ("apple",)
        word_vectors = rng.standard_normal((1, 4))
        sentence_vectors = rng.standard_normal((1, 4))
        document_vector = rng.standard_normal(4)

    tv = TextVectors.of(Encoded())
    assert tv.terms == (("apple", 1),) and tv.dim == 4


# -- update -----------------------------------------------------------------------------


def test_first_event_sets_every_granularity_to_the_unit_input(rng):
    words = rng.standard_normal((3, D))
    sents = rng.standard_normal((2, D))
    doc = rng.standard_normal(D)
    state = InterestState(D)
    assert state.update(
        EncodedEvent("comment", 1.7e9, summarize(["a", "b", "c"], words, sents, doc))
    )
    np.testing.assert_allclose(state.vector("word"), unit(sum(unit(w) for w in words)))
    np.testing.assert_allclose(state.vector("sentence"), unit(sum(unit(s) for s in sents)))
    np.testing.assert_allclose(state.vector("document"), unit(doc))
    assert state.vector("negative") is None
    np.testing.assert_allclose(state.weights(), [1.2, 1.2, 1.2, 0.0])
    assert state.counts == {"click": 0, "search": 0, "comment": 1, "negative": 0}


def test_negative_feedback_goes_only_to_the_negative_channel(rng):
    state = InterestState(D)
    text = make_text(rng)
    state.update(EncodedEvent("click", 100.0, text, item_id="bad-movie", rating=1))
    assert state.present().tolist() == [False, False, False, True]
    np.testing.assert_allclose(state.vector("negative"), unit(text.document), rtol=1e-6)
    assert state.weights()[3] == pytest.approx(1.0)
    assert state.counts["negative"] == 1 and state.counts["click"] == 1
    assert state.fused() is None  # no positive interest yet
    assert state.seen_items() == ["bad-movie"]  # still excluded from recommendations
    assert state.top_terms() == []


def test_half_life_semantics_for_each_channel(rng):
    p = StateParams()
    state = InterestState(D, p)
    state.update(EncodedEvent("click", 1000.0, make_text(rng)))
    for g, h in enumerate((p.half_life_word, p.half_life_sentence, p.half_life_document)):
        assert state.weights(1000.0 + h)[g] == pytest.approx(0.5, rel=1e-12)
    terms = dict(state.top_terms(t=1000.0 + p.half_life_word))
    assert terms["w0"] == pytest.approx(0.5 / 3, rel=1e-12)


def test_newer_events_dominate_older_ones(rng):
    a, b = rng.standard_normal(D), rng.standard_normal(D)
    state = InterestState(D)
    state.update(EncodedEvent("click", 0.0, summarize(document_vector=a)))
    state.update(EncodedEvent("click", 120 * DAY, summarize(document_vector=b)))
    # two half-lives apart: a weighs 1/4 of b
    np.testing.assert_allclose(state.vector("document"), unit(unit(b) + 0.25 * unit(a)))


def test_offsets_are_idempotent_per_topic_partition_and_bounded_lru(rng):
    state = InterestState(D)
    text = make_text(rng)
    ev = lambda topic, part, off: EncodedEvent(  # noqa: E731
        "click", 5.0, text, topic=topic, partition=part, offset=off
    )
    assert state.update(ev("events.click", 0, 10))
    assert not state.update(ev("events.click", 0, 10))
    assert not state.update(ev("events.click", 0, 3))
    assert state.update(ev("events.click", 1, 3))  # other partition
    assert state.update(ev("events.click", 0, 11))
    for p in range(2, 6):  # 4 more sources: the least recently applied ones are evicted
        state.update(ev("events.search", p, 0))
    assert len(state.offsets) == 4
    assert state.offset("events.click", 0) is None and state.offset("events.search", 5) == 0
    assert state.counts["click"] == 7
    with pytest.raises(ValueError):
        state.update(ev("x" * 40, 0, 1))


def test_top_terms_keep_the_heaviest_within_count_and_byte_bounds(rng):
    state = InterestState(D)
    for i in range(100):  # term t{i} gets weight growing with i
        words = [f"t{i}"] * (1 + i % 5) + ["filler"]
        state.update(EncodedEvent("click", float(i), make_text(rng, words=words)))
    terms = state.top_terms()
    assert len(terms) <= 32
    assert terms[0][0] == "filler"
    weights = [w for _, w in terms]
    assert weights == sorted(weights, reverse=True)
    assert sum(5 + len(t.encode()) for t, _ in terms) <= state.params.max_term_bytes
    long_words = ["漢字" * 4 + str(i) for i in range(40)]  # 25 bytes: over the word limit
    state.update(EncodedEvent("click", 200.0, make_text(rng, words=long_words)))
    assert not any(t.startswith("漢字") for t, _ in state.top_terms())


def test_seen_items_keep_the_newest_within_bounds():
    state = InterestState(4)
    for i in range(80):
        state.update(EncodedEvent("click", float(i), item_id=f"m{i}"))
    state.update(EncodedEvent("click", 5.0, item_id="m79"))  # older sighting: no change
    seen = state.seen_items()
    assert seen[0] == "m79" and len(seen) == 50 and seen[-1] == "m30"
    state.update(EncodedEvent("click", 1000.0, item_id="u" * 200))  # too long: not tracked
    assert "u" * 200 not in state.seen_items()
    long_ids = InterestState(4)
    for i in range(50):
        long_ids.update(EncodedEvent("click", float(i), item_id=f"{i:036d}"))
    assert sum(5 + len(k) for k in long_ids.seen_items()) <= long_ids.params.max_item_bytes
    assert long_ids.seen_items()[0] == f"{49:036d}"


def test_reanchoring_keeps_values_even_when_the_shift_alone_would_underflow(rng):
    p = StateParams(reanchor_at=600.0)
    lam = math.log(2) / p.half_life_word
    state = InterestState(D, p)
    state.update(EncodedEvent("click", 0.0, make_text(rng)))
    b = make_text(rng)
    state.update(EncodedEvent("click", 590 / lam, b))  # stored with a factor of e^590
    state.update(EncodedEvent("click", 1250 / lam))  # re-anchor by e^-1250: in two halves
    assert state.t_ref == 1250 / lam
    np.testing.assert_allclose(state.vector("word"), unit(b.word_sum), atol=1e-6)


def test_state_pickles():
    state = InterestState(4)
    state.update(EncodedEvent("click", 1.0, summarize(["a"], np.eye(4)[:1]), item_id="x"))
    back = pickle.loads(pickle.dumps(state))
    assert back.to_bytes() == state.to_bytes()


# -- fusion -----------------------------------------------------------------------------


def test_fusion_renormalises_alphas_over_present_granularities(rng):
    state = InterestState(D)
    doc = rng.standard_normal(D)
    state.update(EncodedEvent("click", 0.0, summarize(document_vector=doc)))
    np.testing.assert_allclose(state.fused(), unit(doc))  # only the document is present
    state.update(EncodedEvent("search", 0.0, make_text(rng)))
    v = state.vectors()
    np.testing.assert_allclose(state.fused(), 0.5 * v[0] + 0.3 * v[1] + 0.2 * v[2])
    custom = InterestState(D, StateParams(alpha_word=0, alpha_sentence=0, alpha_document=1))
    custom.update(EncodedEvent("search", 0.0, make_text(rng)))
    np.testing.assert_allclose(custom.fused(), custom.vector("document"))
    assert fuse(np.eye(2), np.array([True, False]), (0.0, 1.0)) is None


# -- serialization ------------------------------------------------------------------------


def full_state(rng) -> InterestState:
    """Every bounded section filled to its limit with the longest allowed strings."""
    state = InterestState(D)
    for i in range(300):
        words = [f"{i:03d}" + "长词" * 2 + "x" * 9]  # 24 bytes: the longest term kept
        state.update(
            EncodedEvent(
                "comment",
                1.7e9 + i,
                make_text(rng, words=words),
                item_id=f"{i:064d}",
                rating=1 + i % 5,
                topic=f"{i % 8:032d}",
                partition=2**32 - 1,
                offset=2**63 - 1,
            )
        )
    return state


def test_state_size_is_bounded_by_4_kib_at_d384(rng):
    state = full_state(rng)
    data = state.to_bytes()
    assert len(data) <= 4096 == state.params.max_state_bytes(D)
    assert len(state.top_terms()) == 11 and len(state.seen_items()) == 5  # bytes bind
    assert len(state.offsets) == 4
    empty = InterestState(D).to_bytes()
    assert len(empty) == 3192  # header, 4 float16 vectors and crc: 3072 bytes are vectors


def test_round_trip_preserves_everything_within_float16(rng):
    state = full_state(rng)
    back = InterestState.from_bytes(state.to_bytes())
    np.testing.assert_allclose(back.vectors(), state.vectors(), atol=1e-3)
    np.testing.assert_array_equal(back.weights(), state.weights())
    assert back.counts == state.counts and back.offsets == state.offsets
    assert back.seen_items() == state.seen_items()
    assert [t for t, _ in back.top_terms()] == [t for t, _ in state.top_terms()]
    assert (back.t_ref, back.first_ts, back.last_ts) == (state.t_ref, state.first_ts, state.last_ts)
    assert InterestState.from_bytes(InterestState(D).to_bytes()).first_ts is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b"",
        lambda b: b[:50],
        lambda b: b[:-1],
        lambda b: b + b"\0",
        lambda b: b"XXXX" + b[4:],
        lambda b: b[:4] + bytes([99]) + b[5:],
        lambda b: b[:200] + bytes([b[200] ^ 1]) + b[201:],
        lambda b: bytes(len(b)),
    ],
)
def test_corrupt_bytes_raise_state_decode_error(rng, mangle):
    data = full_state(rng).to_bytes()
    with pytest.raises(StateDecodeError):
        InterestState.from_bytes(mangle(data))


def test_unknown_version_is_named_in_the_error():
    data = bytearray(InterestState(4).to_bytes())
    data[4] = 2
    with pytest.raises(StateDecodeError, match="version 2"):
        InterestState.from_bytes(bytes(data))


# -- batches ------------------------------------------------------------------------------


def test_batch_of_float32_events_matches_sequential_float64(rng):
    users = rng.integers(0, 20, 300).tolist()
    events = [
        EncodedEvent(
            ("click", "search", "comment")[i % 3],
            float(rng.uniform(0, 1e7)),
            make_text(rng, n_words=i % 4, n_sent=i % 3),
            item_id=f"i{i % 70}",
            rating=[None, 1, 4][i % 3],
            topic="events.click",
            partition=i % 2,
            offset=i,
        )
        for i in range(300)
    ]
    seq = [InterestState(D) for _ in range(20)]
    for u, ev in zip(users, events, strict=True):
        seq[u].update(ev)
    bat = [InterestState(D) for _ in range(20)]
    for a in range(0, 300, 64):
        batch = EventBatch.from_events(users[a : a + 64], events[a : a + 64], D)
        assert batch.vectors.dtype == np.float32
        assert apply_batch(bat, batch).all()
    for s, b in zip(seq, bat, strict=True):
        np.testing.assert_allclose(b.vectors(), s.vectors(), atol=1e-5)
        # float32 inputs are scaled in float32: ~1e-7 relative, far below float16 storage
        np.testing.assert_allclose(b.weights(1e7), s.weights(1e7), rtol=1e-6)
        assert b.counts == s.counts and b.seen_items() == s.seen_items()
        assert b.offsets == s.offsets


def test_a_rejected_batch_changes_nothing(rng):
    states = [InterestState(D), InterestState(D)]
    good = EventBatch.from_events(
        [0], [EncodedEvent("click", 1.0, make_text(rng), topic="t", offset=1)], D
    )
    apply_batch(states, good)
    before = [s.to_bytes() for s in states]
    bad_vectors = good.vectors.copy()
    bad_vectors[0, 2, 0] = np.inf
    bad = EventBatch(**{**good.__dict__, "vectors": bad_vectors, "offset": np.array([2])})
    with pytest.raises(ValueError):
        apply_batch(states, bad)
    assert [s.to_bytes() for s in states] == before
    with pytest.raises(ValueError):
        apply_batch([InterestState(8)], good)  # dimension mismatch
    with pytest.raises(ValueError):
        apply_batch(
            [InterestState(D), InterestState(D, StateParams(max_items=3))],
            EventBatch.from_events([0, 1], [EncodedEvent("click", 1.0)] * 2, D),
        )
    with pytest.raises(ValueError):
        EventBatch.from_events([0], [EncodedEvent("click", math.nan)], D)


def test_batch_offsets_follow_sequential_semantics_through_evictions(rng):
    """A source evicted mid-batch forgets its offset, in a batch as event by event."""
    text = make_text(rng)

    def ev(part, off):
        return EncodedEvent("click", 1.0, text, topic="events.click", partition=part, offset=off)

    history = [ev(p, 10) for p in range(4)]  # remembers 4 sources, partition 0 the oldest
    stream = [ev(4, 1), ev(0, 5), ev(4, 2), ev(0, 6)]  # a new source evicts 0, so 0's
    # replayed offsets 5 and 6 (<= 10) apply again: the price of remembering 4 sources
    seq, bat = InterestState(D), InterestState(D)
    for e in history:
        seq.update(e)
        bat.update(e)
    expected = [seq.update(e) for e in stream]
    got = apply_batch([bat], EventBatch.from_events([0] * len(stream), stream, D)).tolist()
    assert got == expected == [True, True, True, True]
    assert bat.offsets == seq.offsets and list(bat.offsets) == list(seq.offsets)


def test_decoding_under_smaller_bounds_prunes_to_them(rng):
    state = full_state(rng)
    small = StateParams(max_terms=5, max_items=3, max_sources=2)
    back = InterestState.from_bytes(state.to_bytes(), small)
    assert [t for t, _ in back.top_terms()] == [t for t, _ in state.top_terms()[:5]]
    assert back.seen_items() == state.seen_items()[:3]
    assert list(back.offsets) == list(state.offsets)[-2:]  # the most recently applied
    assert len(back.to_bytes()) < len(state.to_bytes())


def test_named_vectors_are_the_channel_vectors_and_the_fused_one():
    rng = np.random.default_rng(3)
    state = InterestState(dim=8)
    text = summarize(["a", "b"], rng.standard_normal((2, 8)), rng.standard_normal((1, 8)))
    state.update(EncodedEvent("click", 0.0, text))  # no document, no negative yet
    named = state.named_vectors()
    assert set(named) == {*CHANNELS, "fused"}
    for c in CHANNELS:
        want = state.vector(c)
        assert (named[c] is None) == (want is None)
        if want is not None:
            np.testing.assert_array_equal(named[c], want)
    np.testing.assert_array_equal(named["fused"], state.fused())
