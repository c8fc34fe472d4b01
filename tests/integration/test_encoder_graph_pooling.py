"""Pooling in the ONNX graph (issue 10) against the numpy pooling it replaced, on real encoders.

The reference runs each batch exactly as encode() batches it, fetches the token vectors to
the host (`token_vectors`) and pools them with encoders.pooling, as encode() used to.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from encoders import Encoder
from encoders.batching import length_buckets
from encoders.encoder import HIDDEN, EncodedText
from encoders.models import model_file
from encoders.pooling import document_vector, pool
from encoders.pooling_graph import OUTPUTS, TOKENS
from encoders.runtime import CUDA, import_onnxruntime

pytestmark = pytest.mark.integration

TEXTS = [
    "我爱看电影，特别喜欢科幻片和动作片。",
    "The stock market fell sharply after the report. Investors are worried! The end",
    "科幻电影",
    "The of. Movies rock! 的。",  # sentences without content words pool all their words
    "the a of",  # no content word at all: no word vectors, one sentence
    "如何在家里做面包？今天很开心！Great bread recipes.",
    "电影很好看。" * 300,  # truncated at 512 tokens
    "Kafka consumers commit offsets after processing each batch of records. " * 30,
    "ok",
]


def reference(enc: Encoder, texts: list[str]) -> list[EncodedText]:
    """The pre-issue-10 path: hidden states to the host, pooled in numpy, same batches."""
    prepared = enc._prepare(texts, "passage")
    out: list[Any] = [None] * len(texts)
    lengths = [len(p.ids) for p in prepared]
    for batch in length_buckets(lengths, enc.max_batch, enc.max_batch_tokens):
        width = max(lengths[i] for i in batch)
        ids = np.full((len(batch), width), enc.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, i in enumerate(batch):
            ids[row, : lengths[i]] = prepared[i].ids
            mask[row, : lengths[i]] = 1
        hidden = enc.token_vectors(ids, mask)
        for row, i in enumerate(batch):
            p = prepared[i]
            words = pool(hidden[row], [w.pieces for w in p.words], "mean")
            sents = pool(words, p.sentence_words, "sqrt")
            content = [j for j, w in enumerate(p.words) if w.content]
            out[i] = EncodedText(
                tuple(p.words[j].text for j in content),
                words[content],
                tuple(p.sentences),
                sents,
                document_vector(sents),
                p.truncated,
            )
    return out


def vector_pairs(got: list[EncodedText], ref: list[EncodedText]) -> Iterator[tuple]:
    for g, r in zip(got, ref, strict=True):
        assert (g.words, g.sentences, g.truncated) == (r.words, r.sentences, r.truncated)
        yield g.word_vectors, r.word_vectors
        yield g.sentence_vectors, r.sentence_vectors
        yield g.document_vector[None], r.document_vector[None]


def assert_matches(got: list[EncodedText], ref: list[EncodedText], min_cos: float) -> None:
    for a, b in vector_pairs(got, ref):
        assert a.shape == b.shape and a.dtype == np.float32
        if len(a):
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            assert cos.min() >= min_cos
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module", params=["fp32", "int8", "fp16"])
def enc(request: pytest.FixtureRequest, e5_exported: str) -> Encoder:
    return Encoder(e5_exported, device="cpu", precision=request.param)


def test_graph_pooling_matches_numpy_pooling(enc: Encoder) -> None:
    """Batched and one text at a time; fp16 runs on CPU too (emulated, slowly)."""
    texts = TEXTS if enc.precision != "fp16" else TEXTS[:6]
    assert_matches(enc.encode(texts), reference(enc, texts), min_cos=0.99999)
    for text in texts[:4]:
        assert_matches(enc.encode([text]), reference(enc, [text]), min_cos=0.99999)


def test_minilm_wordpiece_matches_numpy_pooling(minilm_exported: str) -> None:
    enc = Encoder(minilm_exported, device="cpu", precision="fp32")
    texts = ["Sci-fi films with spaceships!", "unbelievably overengineered pipelines. ok"]
    assert_matches(enc.encode(texts), reference(enc, texts), min_cos=0.99999)


class _BindingSpy:
    def __init__(self, inner: Any, log: list[tuple], tag: str) -> None:
        self.inner, self.log, self.tag = inner, log, tag

    def bind_ortvalue_input(self, name: str, value: Any) -> None:
        self.log.append((self.tag, "device input", name, value.device_name()))
        self.inner.bind_ortvalue_input(name, value)

    def bind_output(self, name: str, device: str = "cpu", *args: Any) -> None:
        self.log.append((self.tag, "output", name, device))
        self.inner.bind_output(name, device, *args)

    def copy_outputs_to_cpu(self) -> list[np.ndarray]:
        self.log.append((self.tag, "to host"))
        return self.inner.copy_outputs_to_cpu()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _SessionSpy:
    def __init__(self, inner: Any, log: list[tuple], tag: str) -> None:
        self.inner, self.log, self.tag = inner, log, tag

    def io_binding(self) -> _BindingSpy:
        return _BindingSpy(self.inner.io_binding(), self.log, self.tag)

    def run_with_iobinding(self, binding: _BindingSpy, *args: Any) -> None:
        self.inner.run_with_iobinding(binding.inner, *args)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self.log.append((self.tag, "run"))
        return self.inner.run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def spied_encode(enc: Encoder, texts: list[str]) -> list[tuple]:
    log: list[tuple] = []
    model, pooling = enc.session, enc.pooling
    enc.session, enc.pooling = _SessionSpy(model, log, "model"), _SessionSpy(pooling, log, "pool")
    try:
        enc.encode(texts)
    finally:
        enc.session, enc.pooling = model, pooling
    return log


def check_hidden_stays_on_device(log: list[tuple], device: str) -> None:
    batches = sum(1 for e in log if e[:2] == ("pool", "to host"))
    assert batches >= 1
    # the model session: token vectors allocated on its device, never copied to the host
    assert [e for e in log if e[0] == "model"] == [("model", "output", HIDDEN, device)] * batches
    # the pooling session takes them where they are; only pooled vectors come back
    assert ("pool", "device input", TOKENS, device) in log
    assert {e[2] for e in log if e[:2] == ("pool", "output")} == set(OUTPUTS)


def test_encode_never_fetches_token_vectors(e5_exported: str) -> None:
    enc = Encoder(e5_exported, device="cpu")
    check_hidden_stays_on_device(spied_encode(enc, TEXTS[:6]), "cpu")
    # token_vectors() still hands them over, for the benchmarks and the export checks
    ids = np.array([[enc.cls_id, 100, 200, enc.sep_id]], dtype=np.int64)
    assert enc.token_vectors(ids, np.ones_like(ids)).shape == (1, 4, enc.dim)


def has_cuda() -> bool:
    return CUDA in import_onnxruntime().get_available_providers()


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda(), reason="needs onnxruntime-gpu and a CUDA device")
def test_cuda_pools_on_the_device(e5_exported: str) -> None:
    if not model_file(e5_exported, "fp16").exists():
        pytest.skip("no fp16 export")
    enc = Encoder(e5_exported, device="cuda")
    assert enc.provider == CUDA and enc.pooling.get_providers()[0] == CUDA
    check_hidden_stays_on_device(spied_encode(enc, TEXTS), "cuda")
    # TF32 is off in the pooling session, so its sums are float32 like numpy's
    assert_matches(enc.encode(TEXTS), reference(enc, TEXTS), min_cos=0.99999)
    cpu = Encoder(e5_exported, device="cpu", precision="fp32")
    for g, c in zip(enc.encode(TEXTS), cpu.encode(TEXTS), strict=True):
        d, e = g.document_vector, c.document_vector
        assert d @ e / (np.linalg.norm(d) * np.linalg.norm(e)) > 0.999
