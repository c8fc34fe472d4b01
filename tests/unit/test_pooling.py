import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from encoders.batching import length_buckets
from encoders.pooling import document_vector, pool


def reference_pool(vectors: np.ndarray, groups: list[list[int]], scale: str) -> np.ndarray:
    out = []
    for g in groups:
        total = np.zeros(vectors.shape[1])
        for i in g:
            total += vectors[i]
        out.append(total / (len(g) if scale == "mean" else np.sqrt(len(g))))
    return np.array(out)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 20),
    d=st.integers(1, 16),
    data=st.data(),
    scale=st.sampled_from(["mean", "sqrt"]),
)
def test_pool_matches_loop_reference(n: int, d: int, data: st.DataObject, scale: str) -> None:
    rng = np.random.default_rng(n * 31 + d)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    groups = data.draw(
        st.lists(st.lists(st.integers(0, n - 1), min_size=1, max_size=6), max_size=8)
    )
    got = pool(vectors, groups, scale)  # type: ignore[arg-type]
    assert got.shape == (len(groups), d)
    if groups:
        np.testing.assert_allclose(
            got, reference_pool(vectors, groups, scale), rtol=1e-5, atol=1e-5
        )


def test_seed_formulas_word_sentence_document() -> None:
    """v_s = 1/sqrt(|s|) sum v_w and v_p = 1/sqrt(|p|) sum v_s on a hand-checked example."""
    tokens = np.array([[2.0, 0.0], [0.0, 2.0], [4.0, 4.0], [1.0, 1.0]])
    words = pool(tokens, [[0, 1], [2], [3]], "mean")  # (1,1), (4,4), (1,1)
    sentences = pool(words, [[0, 1], [2]], "sqrt")  # (5,5)/sqrt2, (1,1)
    np.testing.assert_allclose(sentences, [[5 / np.sqrt(2)] * 2, [1.0, 1.0]])
    doc = document_vector(sentences)
    np.testing.assert_allclose(doc, (sentences[0] + sentences[1]) / np.sqrt(2))


def test_pool_rejects_empty_groups() -> None:
    with pytest.raises(ValueError):
        pool(np.ones((2, 2)), [[0], []], "mean")


@given(st.lists(st.integers(1, 512), max_size=200), st.integers(1, 64), st.integers(1, 20000))
def test_length_buckets_partition_and_bounds(
    lengths: list[int], max_batch: int, max_tokens: int
) -> None:
    batches = length_buckets(lengths, max_batch, max_tokens)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= max_batch
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= max_tokens
