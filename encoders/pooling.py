"""Pooling token vectors into word, sentence and document vectors (seed formulas).

word      v_w = mean of the word's subword-piece vectors
sentence  v_s = 1/sqrt(|s|) * sum of the sentence's word vectors
document  v_p = 1/sqrt(|p|) * sum of the text's sentence vectors

The 1/sqrt(n) scale keeps the norm of a sum of n roughly independent vectors stable,
so long sentences do not drown short ones. Pure numpy; groups are index lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

Scale = Literal["mean", "sqrt"]


def pool(vectors: np.ndarray, groups: Sequence[Sequence[int]], scale: Scale) -> np.ndarray:
    """Sum the rows of each group, divided by |group| ("mean") or sqrt(|group|) ("sqrt").

    >>> v = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    >>> pool(v, [[0, 1], [2]], "mean").tolist()
    [[0.5, 0.5], [2.0, 2.0]]
    >>> pool(v, [[0, 1]], "sqrt").round(4).tolist()
    [[0.7071, 0.7071]]
    """
    if not groups:
        return np.zeros((0, vectors.shape[1]), dtype=vectors.dtype)
    sizes = np.fromiter((len(g) for g in groups), dtype=np.int64, count=len(groups))
    if (sizes == 0).any():
        raise ValueError("every group needs at least one member")
    flat = np.fromiter((i for g in groups for i in g), dtype=np.int64, count=int(sizes.sum()))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sums = np.add.reduceat(vectors[flat], starts, axis=0)
    div = sizes if scale == "mean" else np.sqrt(sizes)
    return (sums / div[:, None].astype(vectors.dtype)).astype(vectors.dtype, copy=False)


def document_vector(sentence_vectors: np.ndarray) -> np.ndarray:
    """1/sqrt(|p|) times the sum of the sentence vectors.

    >>> document_vector(np.array([[3.0, 0.0], [0.0, 4.0]])).round(4).tolist()
    [2.1213, 2.8284]
    """
    return pool(sentence_vectors, [range(len(sentence_vectors))], "sqrt")[0]
