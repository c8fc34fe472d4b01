"""Fusing the word, sentence and document interest vectors into one user vector.

`v_u = α_w v_w + α_s v_s + α_d v_d` over the *unit* granularity vectors. A granularity
with no weight yet (a user who only clicked items without text, say) is left out and the
remaining alphas are renormalised, so the fused vector never shrinks towards zero merely
because one granularity is missing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def fuse(vectors: np.ndarray, present: np.ndarray, alphas: Sequence[float]) -> np.ndarray | None:
    """Alpha-weighted sum of unit vectors, alphas renormalised over the present rows.

    Parameters
    ----------
    vectors
        [g, d] unit rows (absent rows may hold anything; they get no weight).
    present
        [g] booleans: which rows carry information.
    alphas
        g non-negative mixing weights.

    Returns None when no present row has a positive alpha. The result is not rescaled
    to unit length: its norm says how much the granularities agree, and cosine search
    (Qdrant's `Cosine` distance) ignores it anyway.

    Examples
    --------
    >>> v = np.eye(3)
    >>> fuse(v, np.array([True, True, True]), (0.5, 0.3, 0.2)).tolist()
    [0.5, 0.3, 0.2]
    >>> fuse(v, np.array([False, True, True]), (0.5, 0.3, 0.2)).round(6).tolist()
    [0.0, 0.6, 0.4]
    >>> fuse(v, np.array([False, False, False]), (0.5, 0.3, 0.2)) is None
    True
    """
    a = np.asarray(alphas, dtype=np.float64) * np.asarray(present, dtype=bool)
    total = float(a.sum())
    if total <= 0.0:
        return None
    return (a / total) @ np.asarray(vectors, dtype=np.float64)
