"""Word, sentence and document pooling as a small ONNX graph, run where the encoder runs.

The encoder session keeps its token vectors on its device (an OrtValue); this graph takes
them there and returns only pooled vectors, so on CUDA the [batch, seq, dim] hidden states
never cross to the host. CPU runs the same graph. The formulas are encoders.pooling's:

    word      v_w = mean of the word's piece vectors
    sentence  v_s = 1/sqrt(|s|) * sum of its word vectors
    document  v_p = 1/sqrt(|p|) * sum of its sentence vectors

The host sends indexes, not dense pooling matrices: `piece_word` [B, S] says which output
word each token belongs to (-1: none), `word_sentence` [B, W] which sentence each word
joins. The graph builds the one-hot [B, W, S] and [B, P, W] on the device (Equal against a
Range) and pools with a MatMul, then scales; so the host sends 8 bytes a token and 12 a
word, where dense float matrices would cost B*W*S*4 (up to 16 MB at 8192 tokens, as much
as the hidden states they replace). The one-hot MatMul is O(W*S*dim), against the
encoder's O(S*dim*(12*layers*dim + 2*layers*S)): at most 1.5% more work for a 12-layer
encoder at S=512 with every token its own word, under 1% for real text. Only the words
that are returned or pooled into a sentence get a row.

The graphs ship built (encoders/data/pooling_*.onnx, 2 KB each): the runtime has
onnxruntime, not `onnx`. `build_pooling_model` (export extra) makes them;
`python -m encoders.pooling_graph` writes them again, and a test checks they agree.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import cache
from importlib import resources
from itertools import chain
from typing import Any

import numpy as np

from encoders.pooling import Scale

TOKENS = "token_vectors"
OUTPUTS = ("word_vectors", "sentence_vectors", "document_vectors")
OPSET = 17  # a model of its own, whatever the encoder file's; axes as inputs need >= 13
IR_VERSION = 8  # what opset 17 files carry; onnxruntime >= 1.14 reads it
# the built graphs ship in the package (encoders/data): the runtime has onnxruntime, not
# `onnx`; `python -m encoders.pooling_graph` (export extra) writes them again
TOKEN_TYPES = {"tensor(float)": "float", "tensor(float16)": "float16"}


def _segment_sum(x: str, segment: str, scale: str, out: str) -> list[Any]:
    """out[b, m] = scale[b, m] * sum of x[b, n] over n with segment[b, n] == m.

    m runs over range(scale.shape[1]); a segment of -1 (padding) matches no m.
    """
    from onnx.helper import make_node as n

    from onnx import TensorProto

    return [
        n("Shape", [scale], [f"{out}/shape"]),
        n("Gather", [f"{out}/shape", "one"], [f"{out}/count"], axis=0),
        n("Range", ["zero", f"{out}/count", "one"], [f"{out}/ids"]),
        n("Unsqueeze", [f"{out}/ids", "axis1"], [f"{out}/ids_col"]),  # [M, 1]
        n("Unsqueeze", [segment, "axis1"], [f"{out}/segment_row"]),  # [B, 1, N]
        n("Equal", [f"{out}/segment_row", f"{out}/ids_col"], [f"{out}/hits"]),  # [B, M, N]
        n("Cast", [f"{out}/hits"], [f"{out}/onehot"], to=TensorProto.FLOAT),
        n("MatMul", [f"{out}/onehot", x], [f"{out}/sum"]),  # [B, M, D]
        n("Unsqueeze", [scale, "axis2"], [f"{out}/scale_col"]),  # [B, M, 1]
        n("Mul", [f"{out}/sum", f"{out}/scale_col"], [out]),
    ]


def build_pooling_model(token_type: str) -> Any:
    """The pooling graph (an onnx.ModelProto; needs the `onnx` package) for token vectors
    of the onnxruntime type `token_type`; float16 vectors are cast to float32 before any
    sum. Outputs: word_vectors [B, W, dim], sentence_vectors [B, P, dim], document_vectors
    [B, dim], all float32, for any dim."""
    from onnx.helper import make_node as n

    from onnx import TensorProto, helper, numpy_helper

    token_elem = {"float": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}
    nodes = [
        n("Cast", [TOKENS], ["tokens"], to=TensorProto.FLOAT),
        *_segment_sum("tokens", "piece_word", "word_scale", "word_vectors"),
        *_segment_sum("word_vectors", "word_sentence", "sentence_scale", "sentence_vectors"),
        n("ReduceSum", ["sentence_vectors", "axis1"], ["document/sum"], keepdims=0),
        n("Unsqueeze", ["document_scale", "axis1"], ["document/scale_col"]),
        n("Mul", ["document/sum", "document/scale_col"], ["document_vectors"]),
    ]
    constants = {
        "zero": np.array(0, np.int64),
        "one": np.array(1, np.int64),
        "axis1": np.array([1], np.int64),
        "axis2": np.array([2], np.int64),
    }
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    info = helper.make_tensor_value_info
    inputs = [
        info(TOKENS, token_elem[TOKEN_TYPES[token_type]], ["batch", "tokens", "dim"]),
        info("piece_word", i64, ["batch", "tokens"]),
        info("word_scale", f, ["batch", "words"]),
        info("word_sentence", i64, ["batch", "words"]),
        info("sentence_scale", f, ["batch", "sentences"]),
        info("document_scale", f, ["batch"]),
    ]
    outputs = [
        info("word_vectors", f, ["batch", "words", "dim"]),
        info("sentence_vectors", f, ["batch", "sentences", "dim"]),
        info("document_vectors", f, ["batch", "dim"]),
    ]
    initializers = [numpy_helper.from_array(v, name) for name, v in constants.items()]
    graph = helper.make_graph(nodes, "pooling", inputs, outputs, initializer=initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="interest-stream"
    )
    model.ir_version = IR_VERSION
    return model


def shipped_file(token_type: str) -> Any:
    """Where the built graph for `token_type` ships (a Traversable in the package)."""
    if token_type not in TOKEN_TYPES:
        raise ValueError(f"no pooling graph for token vectors of type {token_type!r}")
    return resources.files("encoders") / "data" / f"pooling_{TOKEN_TYPES[token_type]}.onnx"


@cache
def pooling_model(token_type: str) -> bytes:
    """The serialized pooling graph for token vectors of the onnxruntime type `token_type`
    ("tensor(float)" or "tensor(float16)"), as shipped with the package."""
    return bytes(shipped_file(token_type).read_bytes())


def pooling_feeds(
    words: Sequence[Sequence[Sequence[int]]],
    sentences: Sequence[Sequence[Sequence[int]]],
    width: int,
) -> dict[str, np.ndarray]:
    """The graph's index and scale inputs for one batch of rows `width` tokens wide.

    words[r][k] lists the token positions of row r's k-th output word; sentences[r][s]
    the words (indexes into words[r]) pooled into sentence s. Within a row no token
    belongs to two words and no word to two sentences; every word, sentence and row
    needs at least one member.

    >>> f = pooling_feeds([[[1, 2], [3]]], [[[0, 1]]], width=5)
    >>> f["piece_word"].tolist(), f["word_scale"].tolist(), f["word_sentence"].tolist()
    ([[-1, 0, 0, 1, -1]], [[0.5, 1.0]], [[0, 0]])
    """
    rows = len(words)
    n_words = max(len(w) for w in words)
    n_sentences = max(len(s) for s in sentences)
    piece_word = np.full((rows, width), -1, dtype=np.int64)
    word_scale = np.zeros((rows, n_words), dtype=np.float32)
    word_sentence = np.full((rows, n_words), -1, dtype=np.int64)
    sentence_scale = np.zeros((rows, n_sentences), dtype=np.float32)
    document_scale = np.zeros(rows, dtype=np.float32)
    for r, (row_words, row_sentences) in enumerate(zip(words, sentences, strict=True)):
        if not row_sentences:
            raise ValueError(f"row {r} has no sentence")
        _fill(piece_word[r], word_scale[r], row_words, "mean", "word")
        _fill(word_sentence[r], sentence_scale[r], row_sentences, "sqrt", "sentence")
        document_scale[r] = 1 / np.sqrt(np.float32(len(row_sentences)))
    return {
        "piece_word": piece_word,
        "word_scale": word_scale,
        "word_sentence": word_sentence,
        "sentence_scale": sentence_scale,
        "document_scale": document_scale,
    }


def _fill(
    segment: np.ndarray, scale: np.ndarray, groups: Sequence[Sequence[int]], how: Scale, what: str
) -> None:
    """segment[members of group k] = k; scale[k] = 1/|k| ("mean") or 1/sqrt(|k|) ("sqrt")."""
    sizes = np.fromiter(map(len, groups), dtype=np.int64, count=len(groups))
    if (sizes == 0).any():
        raise ValueError(f"{what} {int(np.argmin(sizes))} has no members")
    members = np.fromiter(chain.from_iterable(groups), dtype=np.int64, count=int(sizes.sum()))
    segment[members] = np.repeat(np.arange(len(groups)), sizes)
    if np.count_nonzero(segment >= 0) != len(members):
        raise ValueError(f"a member belongs to two {what}s (or twice to one)")
    size = sizes.astype(np.float32)
    scale[: len(groups)] = 1 / (size if how == "mean" else np.sqrt(size))


def main() -> int:
    """Write the shipped graphs again (after changing `build_pooling_model`)."""
    for token_type in TOKEN_TYPES:
        path = shipped_file(token_type)
        data = build_pooling_model(token_type).SerializeToString()
        with resources.as_file(path) as out:
            out.write_bytes(data)
        print(f"{out}: {len(data):,} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
