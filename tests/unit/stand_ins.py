"""What the worker needs of an encoded text (`encoders.EncodedText`), for stand-in encoders
in unit tests that need no model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Encoded:
    words: tuple[str, ...]
    word_vectors: np.ndarray
    sentence_vectors: np.ndarray
    document_vector: np.ndarray
