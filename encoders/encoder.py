"""The encoder: strings in; word, sentence and document vectors out, one ONNX pass a batch.

Per text: split into sentences, tokenize every sentence (all texts of a call in one
parallel `encode_batch`), lay the sentences end to end as one sequence between the
special tokens, and run length-bucketed batches through ONNX Runtime. A second, small
session pools each batch's token vectors where they were computed (on the GPU under
CUDA) into word, sentence and document vectors (encoders.pooling_graph); only those and
never the [batch, seq, dim] token vectors come back to the host. CPU takes the same path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from encoders.batching import length_buckets
from encoders.models import (
    DEFAULT_MODEL,
    Precision,
    TextKind,
    get_spec,
    model_file,
    tokenizer_file,
)
from encoders.pooling_graph import OUTPUTS, TOKENS, pooling_feeds, pooling_model
from encoders.runtime import (
    CPU,
    CUDA,
    Device,
    EncoderRuntimeError,
    SessionPlan,
    create_session,
    import_onnxruntime,
    plan_session,
)
from encoders.text import Word, merge_subwords, split_sentences

log = logging.getLogger("encoders")
HIDDEN = "last_hidden_state"


class EmptyTextError(ValueError):
    """A text to encode is empty or only whitespace."""


@dataclass(frozen=True)
class EncodedText:
    """Everything the interest state needs from one text."""

    words: tuple[str, ...]  # content words: no specials, stopwords or punctuation
    word_vectors: np.ndarray  # [len(words), dim] float32
    sentences: tuple[str, ...]
    sentence_vectors: np.ndarray  # [len(sentences), dim]
    document_vector: np.ndarray  # [dim]
    truncated: bool  # the text was longer than the model's max length


@dataclass
class _Prepared:
    ids: list[int]
    words: list[Word]  # every word of the sequence, content or not
    sentence_words: list[list[int]]  # per sentence: indices into `words` to pool
    sentences: list[str]
    truncated: bool


@dataclass(frozen=True)
class _Slots:
    """The words a text sends through the pooling graph: its sentences' and content words."""

    pieces: list[tuple[int, ...]]  # per pooled word, in text order: its token positions
    sentences: list[list[int]]  # per sentence: indexes into `pieces`
    content: list[int]  # the content words' indexes into `pieces`

    @classmethod
    def of(cls, p: _Prepared) -> _Slots:
        content = [j for j, w in enumerate(p.words) if w.content]
        pooled = sorted({j for g in p.sentence_words for j in g}.union(content))
        slot = {j: k for k, j in enumerate(pooled)}
        return cls(
            pieces=[p.words[j].pieces for j in pooled],
            sentences=[[slot[j] for j in g] for g in p.sentence_words],
            content=[slot[j] for j in content],
        )


class Encoder:
    """ONNX BERT encoder with word/sentence/document pooling.

    device "auto" takes CUDA (fp16) when onnxruntime-gpu sees a GPU, else CPU (int8).
    `max_batch` and `max_batch_tokens` bound one forward pass (rows, rows x length).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: Device = "auto",
        precision: Precision | None = None,
        model_root: Path | None = None,
        max_length: int | None = None,
        max_batch: int = 64,
        max_batch_tokens: int = 8192,
        threads: int = 0,
        auto_export: bool = False,
    ) -> None:
        from tokenizers import Tokenizer

        self.spec = get_spec(model)
        self.max_length = min(max_length or self.spec.max_length, self.spec.max_length)
        self.max_batch, self.max_batch_tokens = max_batch, max_batch_tokens
        ort = import_onnxruntime()
        plan = plan_session(ort.get_available_providers(), device, precision)
        self.session = self._open(plan, model_root, threads, auto_export, device)
        self.provider = self.session.get_providers()[0]
        self.precision = self._plan.precision
        # outputs are allocated where the model runs; only what encode() copies comes back
        self._device = "cuda" if self.provider == CUDA else "cpu"
        token_type = next(o.type for o in self.session.get_outputs() if o.name == HIDDEN)
        self.pooling = create_session(
            pooling_model(token_type),
            self._plan,
            threads,
            exact_fp32=True,
            spinning=False,
        )
        tok_path = tokenizer_file(model, model_root)
        self.tokenizer = Tokenizer.from_file(str(tok_path))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        ids = {
            t: self.tokenizer.token_to_id(t)
            for t in (self.spec.cls_token, self.spec.sep_token, self.spec.pad_token)
        }
        if None in ids.values():
            raise EncoderRuntimeError(f"{tok_path} lacks special tokens: {ids}")
        self.cls_id, self.sep_id, self.pad_id = (int(v) for v in ids.values())
        log.info(
            "encoder %s %s on %s (%s)", model, self.precision, self.provider, self.model_path.name
        )

    @property
    def dim(self) -> int:
        return self.spec.dim

    def _open(
        self, plan: SessionPlan, root: Path | None, threads: int, auto_export: bool, device: Device
    ) -> Any:
        path = model_file(self.spec.name, plan.precision, root)
        if not path.exists() or not tokenizer_file(self.spec.name, root).exists():
            if not auto_export:
                raise EncoderRuntimeError(
                    f"{path} not found: run `interest-stream export-model --model "
                    f"{self.spec.name} --precision {plan.precision}`"
                )
            from encoders.export import export_model

            log.warning("%s not found: exporting it now (first use)", path)
            export_model(self.spec.name, [plan.precision], root)
        try:
            session = create_session(path, plan, threads)
        except EncoderRuntimeError as err:
            if device != "auto" or plan.provider == CPU:
                raise
            log.warning("%s; falling back to the CPU provider", err)
            return self._open(SessionPlan(CPU, "int8"), root, threads, auto_export, "cpu")
        self._plan, self.model_path = plan, path
        return session

    # ------------------------------------------------------------------ tokenization

    def _prepare(self, texts: Sequence[str], kind: TextKind) -> list[_Prepared]:
        sentence_lists: list[list[str]] = []
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise EmptyTextError(f"text #{i} is empty or whitespace: {text!r}")
            sentence_lists.append(split_sentences(text))
        flat = [s for sents in sentence_lists for s in sents]
        prefix = self.spec.prefix(kind)
        encoded = self.tokenizer.encode_batch(
            [prefix, *flat] if prefix else flat, add_special_tokens=False
        )
        prefix_ids = encoded[0].ids if prefix else []
        encoded = encoded[1:] if prefix else encoded
        budget = self.max_length - 2 - len(prefix_ids)

        out, k = [], 0
        for i, sents in enumerate(sentence_lists):
            ids = [self.cls_id, *prefix_ids]
            words: list[Word] = []
            sentence_words: list[list[int]] = []
            kept: list[str] = []
            truncated = False
            for sent in sents:
                enc = encoded[k]
                k += 1
                room = budget - (len(ids) - 1 - len(prefix_ids))
                if room <= 0:
                    truncated = True
                    continue
                toks, tids = enc.tokens[:room], enc.ids[:room]
                truncated |= len(enc.ids) > room
                sw = [
                    replace(w, content=False) if w.text == self.spec.unk_token else w
                    for w in merge_subwords(toks, self.spec.subword_style, offset=len(ids))
                ]
                if not sw:  # no tokens, or truncation left only a bare "▁" (no word)
                    continue
                first = len(words)
                words.extend(sw)
                content = [first + j for j, w in enumerate(sw) if w.content]
                sentence_words.append(content or list(range(first, len(words))))
                kept.append(sent)
                ids.extend(tids)
            if not sentence_words:  # only characters the tokenizer drops (zero-width, BOM)
                raise EmptyTextError(f"text #{i} has no tokens: {texts[i][:40]!r}")
            ids.append(self.sep_id)
            out.append(_Prepared(ids, words, sentence_words, kept, truncated))
        return out

    # ------------------------------------------------------------------ inference

    def _run(self, session: Any, feeds: dict[str, Any], outputs: Sequence[str]) -> Any:
        """Run through IO binding: numpy inputs are copied to the device once, OrtValue
        inputs (the token vectors) are used where they are, outputs stay on the device
        until the caller copies them. Returns the binding."""
        binding = session.io_binding()
        for name, value in feeds.items():
            if isinstance(value, np.ndarray):
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        for name in outputs:
            binding.bind_output(name, self._device)
        session.run_with_iobinding(binding)
        return binding

    def token_vectors(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One forward pass: [batch, seq] ids and mask -> [batch, seq, dim] float32."""
        binding = self._run(self.session, {"input_ids": ids, "attention_mask": mask}, [HIDDEN])
        return binding.copy_outputs_to_cpu()[0].astype(np.float32, copy=False)

    def encode(self, texts: Sequence[str], kind: TextKind = "passage") -> list[EncodedText]:
        """Encode texts (order kept). kind picks the e5 prefix: "query" for what users
        write (searches, comments), "passage" for item texts."""
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not one string")
        prepared = self._prepare(texts, kind)
        results: list[EncodedText | None] = [None] * len(prepared)
        t0 = time.perf_counter()
        lengths = [len(p.ids) for p in prepared]
        for batch in length_buckets(lengths, self.max_batch, self.max_batch_tokens):
            width = max(len(prepared[i].ids) for i in batch)
            ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                n = len(prepared[i].ids)
                ids[row, :n] = prepared[i].ids
                mask[row, :n] = 1
            slots = [_Slots.of(prepared[i]) for i in batch]
            feeds = pooling_feeds([s.pieces for s in slots], [s.sentences for s in slots], width)
            encoded = self._run(self.session, {"input_ids": ids, "attention_mask": mask}, [HIDDEN])
            feeds[TOKENS] = encoded.get_outputs()[0]  # an OrtValue, left on the device
            pooled = self._run(self.pooling, feeds, OUTPUTS).copy_outputs_to_cpu()
            for row, i in enumerate(batch):
                words, sents, doc = (out[row] for out in pooled)
                results[i] = _result(prepared[i], slots[row], words, sents, doc)
        log.debug("encoded %d texts in %.3fs", len(texts), time.perf_counter() - t0)
        return [r for r in results if r is not None]


def _result(
    p: _Prepared, slots: _Slots, words: np.ndarray, sents: np.ndarray, doc: np.ndarray
) -> EncodedText:
    """One text's vectors out of its batch row; copies, so no text pins the batch arrays."""
    return EncodedText(
        words=tuple(w.text for w in p.words if w.content),
        word_vectors=words[np.asarray(slots.content, dtype=np.intp)],
        sentences=tuple(p.sentences),
        sentence_vectors=sents[: len(p.sentences)].copy(),
        document_vector=doc.copy(),
        truncated=p.truncated,
    )
