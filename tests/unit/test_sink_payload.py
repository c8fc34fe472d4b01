"""Cached text vectors in an item payload: exact float32 round trip, loud on malformed data."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from streams.sink import (
    UserPoint,
    item_point_id,
    text_vectors_from_payload,
    text_vectors_to_payload,
    user_point_id,
)
from streams.state import TextVectors, summarize

FLOATS = st.floats(width=32, allow_nan=False, allow_infinity=False)
TERMS = st.lists(st.tuples(st.text(min_size=1, max_size=12), st.integers(1, 2**31 - 1)), max_size=8)


@st.composite
def text_vectors(draw: st.DrawFn) -> TextVectors:
    dim = draw(st.integers(1, 48))
    vec = arrays(np.float32, dim, elements=FLOATS)
    direction = draw(arrays(np.float32, dim, elements=st.floats(-1, 1, width=32)))
    norm = np.linalg.norm(direction.astype(np.float64))
    document = (direction / norm).astype(np.float32) if norm > 1e-6 else np.zeros(dim, np.float32)
    return TextVectors(
        word_sum=draw(vec),
        n_words=draw(st.integers(0, 10_000)),
        sentence_sum=draw(vec),
        n_sentences=draw(st.integers(0, 1_000)),
        document=document,
        terms=tuple(draw(TERMS)),
    )


def assert_same(a: TextVectors, b: TextVectors) -> None:
    for name in ("word_sum", "sentence_sum", "document"):
        x, y = getattr(a, name), getattr(b, name)
        assert y.dtype == np.float32
        assert x.tobytes() == y.tobytes(), name  # bit for bit, -0.0 included
    assert (a.n_words, a.n_sentences, a.terms) == (b.n_words, b.n_sentences, b.terms)


@settings(max_examples=150, deadline=None)
@given(text_vectors())
def test_round_trip_is_exact_for_float32_through_json(tv: TextVectors) -> None:
    payload = text_vectors_to_payload(tv)
    stored = json.loads(json.dumps(payload))  # what a Qdrant payload goes through
    assert_same(tv, text_vectors_from_payload(stored, dim=tv.dim))


def test_round_trip_of_a_summarised_text() -> None:
    rng = np.random.default_rng(0)
    tv = summarize(
        ["Rust", "borrow", "rust"],
        rng.standard_normal((3, 384)).astype(np.float32),
        rng.standard_normal((2, 384)).astype(np.float32),
        rng.standard_normal(384).astype(np.float32),
    )
    assert_same(tv, text_vectors_from_payload(text_vectors_to_payload(tv), dim=384))


def test_float64_input_is_stored_as_float32() -> None:
    tv = summarize(["a"], np.array([[0.1, 0.2, 0.3]]), document_vector=np.array([1.0, 2, 2]))
    back = text_vectors_from_payload(text_vectors_to_payload(tv))
    np.testing.assert_array_equal(back.word_sum, tv.word_sum.astype(np.float32))


def test_non_finite_vectors_are_refused_on_encode() -> None:
    tv = summarize(dim=2)
    bad = TextVectors(np.array([np.nan, 0.0]), 1, tv.sentence_sum, 0, tv.document)
    with pytest.raises(ValueError, match="finite"):
        text_vectors_to_payload(bad)


def good() -> dict:
    tv = summarize(["x"], np.eye(4, dtype=np.float32)[:1], document_vector=np.ones(4, np.float32))
    return text_vectors_to_payload(tv)


def with_(**changes) -> dict:
    return {**good(), **changes}


def without(key: str) -> dict:
    d = good()
    del d[key]
    return d


def b64(*values: float) -> str:
    return base64.b64encode(np.array(values, "<f4").tobytes()).decode()


ZEROS = text_vectors_to_payload(
    TextVectors(np.zeros(4, np.float32), 0, np.zeros(4, np.float32), 0, np.zeros(4, np.float32))
)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ([1, 2], "expected a mapping"),
        (with_(v=2), "unknown version"),
        (without("v"), "unknown version"),
        (with_(dim=0), "dim must be a positive int"),
        (with_(dim="4"), "dim must be a positive int"),
        (with_(dim=8), "holds 16 bytes, expected 32"),
        (with_(word_sum="not base64!"), "word_sum is not base64"),
        (with_(word_sum="AAAA"), "word_sum holds 3 bytes"),
        (with_(sentence_sum=None), "sentence_sum must be a base64 string"),
        (without("document"), "document must be a base64 string"),
        (with_(document=b64(2, 0, 0, 0)), "unit length"),
        (with_(n_words=-1), "n_words must be an int >= 0"),
        (with_(n_words=1.0), "n_words must be an int >= 0"),
        (with_(n_sentences=True), "n_sentences must be an int >= 0"),
        (with_(terms="x"), "terms must be a list"),
        (with_(terms=[["x"]]), r"each term must be \[str, int > 0\]"),
        (with_(terms=[["x", 0]]), r"each term must be \[str, int > 0\]"),
        (with_(terms=[[1, 1]]), r"each term must be \[str, int > 0\]"),
        (with_(word_sum=b64(np.nan, 0, 0, 0)), "word_sum is not finite"),
    ],
)
def test_malformed_payloads_raise_value_error(payload, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        text_vectors_from_payload(payload)


def test_dim_must_match_when_given() -> None:
    assert text_vectors_from_payload(ZEROS, dim=4).dim == 4
    with pytest.raises(ValueError, match="dim 4, expected 384"):
        text_vectors_from_payload(ZEROS, dim=384)


def test_point_ids_are_stable_uuid5_per_kind() -> None:
    assert user_point_id("u1") == user_point_id("u1") != user_point_id("u2")
    assert user_point_id("u1") != item_point_id("u1")
    assert item_point_id("i1") == "ed0d8a05-2e8f-51f4-b2ae-6682330ba4f6"  # stored data: fixed


def test_user_point_rejects_unknown_vector_names() -> None:
    with pytest.raises(ValueError, match="unknown user vectors"):
        UserPoint("u", {"docment": np.zeros(3)})
