"""The pooling graph against encoders.pooling (the numpy reference), on random token vectors.

No exported model needed: the graph is small and runs on ORT's CPU provider in milliseconds.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.pooling import document_vector, pool
from encoders.pooling_graph import (
    OUTPUTS,
    TOKEN_TYPES,
    TOKENS,
    build_pooling_model,
    pooling_feeds,
    pooling_model,
)
from encoders.runtime import CPU, SessionPlan, create_session

pytest.importorskip("onnxruntime")
DIM = 8


@pytest.fixture(scope="module")
def sessions() -> dict[type, object]:
    """One session per token dtype the encoders emit (fp16 files keep float32 outputs)."""
    types = {np.float32: "tensor(float)", np.float16: "tensor(float16)"}
    plan = SessionPlan(CPU, "fp32")
    return {dt: create_session(pooling_model(t), plan, threads=1) for dt, t in types.items()}


def run(session: object, hidden: np.ndarray, words: list, sentences: list) -> list[np.ndarray]:
    feeds = pooling_feeds(words, sentences, hidden.shape[1])
    return session.run(list(OUTPUTS), {TOKENS: hidden, **feeds})  # type: ignore[attr-defined]


@st.composite
def texts(draw: st.DrawFn) -> tuple[int, list[list[list[int]]], list[list[list[int]]]]:
    """Rows of words (contiguous runs of token positions, gaps allowed) and sentences
    (disjoint runs of those words, gaps allowed), as the encoder lays them out."""
    width = draw(st.integers(3, 40))
    all_words, all_sentences = [], []
    for _ in range(draw(st.integers(1, 4))):
        words, pos = [], draw(st.integers(0, 2))
        while pos < width and len(words) < 12:
            n = draw(st.integers(1, 4))
            if pos + n > width:
                break
            words.append(list(range(pos, pos + n)))
            pos += n + draw(st.integers(0, 2))
        if not words:
            words = [[0]]
        order = draw(st.permutations(range(len(words))))
        keep = sorted(order[: draw(st.integers(1, len(words)))])
        cuts = sorted(draw(st.sets(st.integers(1, len(keep)), max_size=len(keep) - 1)))
        sentences = [keep[a:b] for a, b in zip([0, *cuts], [*cuts, len(keep)], strict=True)]
        all_words.append(words)
        all_sentences.append([s for s in sentences if s])
    return width, all_words, all_sentences


@settings(max_examples=80, deadline=None)
@given(texts(), st.sampled_from([np.float32, np.float16]))
def test_graph_matches_numpy_pooling(sessions: dict, batch: tuple, dtype: type) -> None:
    width, words, sentences = batch
    rng = np.random.default_rng(width)
    hidden = rng.normal(size=(len(words), width, DIM)).astype(dtype)
    word_out, sent_out, doc_out = run(sessions[dtype], hidden, words, sentences)
    assert word_out.dtype == sent_out.dtype == doc_out.dtype == np.float32
    for r, (w, s) in enumerate(zip(words, sentences, strict=True)):
        wv = pool(hidden[r].astype(np.float32), w, "mean")
        sv = pool(wv, s, "sqrt")
        np.testing.assert_allclose(word_out[r, : len(w)], wv, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(sent_out[r, : len(s)], sv, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(doc_out[r], document_vector(sv), rtol=1e-5, atol=1e-6)
        # padding rows are zero, so they cannot leak into a document sum
        assert not word_out[r, len(w) :].any() and not sent_out[r, len(s) :].any()


def test_tokens_outside_every_word_are_ignored(sessions: dict) -> None:
    hidden = np.ones((1, 4, DIM), np.float32)
    hidden[0, 0] = 1e6  # a [CLS] token no word uses
    words, sents, doc = run(sessions[np.float32], hidden, [[[1], [2, 3]]], [[[0, 1]]])
    np.testing.assert_allclose(words[0], 1.0)
    np.testing.assert_allclose(sents[0], np.sqrt(2), rtol=1e-6)
    np.testing.assert_allclose(doc[0], np.sqrt(2), rtol=1e-6)


def test_feeds_reject_what_the_graph_cannot_express() -> None:
    with pytest.raises(ValueError, match="no members"):
        pooling_feeds([[[0], []]], [[[0]]], 3)
    with pytest.raises(ValueError, match="two words"):
        pooling_feeds([[[0, 1], [1]]], [[[0, 1]]], 3)
    with pytest.raises(ValueError, match="two sentences"):
        pooling_feeds([[[0], [1]]], [[[0, 1], [1]]], 3)
    with pytest.raises(ValueError, match="no sentence"):
        pooling_feeds([[[0]]], [[]], 3)


def test_shipped_graphs_are_valid_onnx_and_what_the_builder_makes() -> None:
    """The graphs in encoders/data against `onnx` (export extra): valid, and the same graph
    as `build_pooling_model` makes now (run `python -m encoders.pooling_graph` if not)."""
    onnx = pytest.importorskip("onnx")
    for token_type in TOKEN_TYPES:
        model = onnx.load_from_string(pooling_model(token_type))
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        assert [o.name for o in inferred.graph.output] == list(OUTPUTS)
        assert model.opset_import[0].version == 17 and not model.opset_import[0].domain
        assert model.graph == build_pooling_model(token_type).graph, token_type
