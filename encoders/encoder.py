"""The encoder: strings in; word, sentence and document vectors out, one ONNX pass a batch.

Per text: split into sentences, tokenize every sentence (all texts of a call in one
parallel `encode_batch`), lay the sentences end to end as one sequence between the
special tokens, and run length-bucketed batches through ONNX Runtime. The token
vectors of each row are then pooled with the text's own masks (encoders.pooling).
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
from encoders.pooling import document_vector, pool
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
                if not tids:
                    continue
                sw = [
                    replace(w, content=False) if w.text == self.spec.unk_token else w
                    for w in merge_subwords(toks, self.spec.subword_style, offset=len(ids))
                ]
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

    def token_vectors(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One forward pass: [batch, seq] ids and mask -> [batch, seq, dim] float32."""
        if self.provider == CUDA:
            # IO binding: ORT copies the inputs to the device once and allocates the
            # output there, instead of staging both through its own host buffers
            binding = self.session.io_binding()
            binding.bind_cpu_input("input_ids", ids)
            binding.bind_cpu_input("attention_mask", mask)
            binding.bind_output("last_hidden_state", "cuda")
            self.session.run_with_iobinding(binding)
            out = binding.copy_outputs_to_cpu()[0]
        else:
            out = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out.astype(np.float32, copy=False)

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
            hidden = self.token_vectors(ids, mask)
            for row, i in enumerate(batch):
                results[i] = self._pool(prepared[i], hidden[row])
        log.debug("encoded %d texts in %.3fs", len(texts), time.perf_counter() - t0)
        return [r for r in results if r is not None]

    def _pool(self, p: _Prepared, hidden: np.ndarray) -> EncodedText:
        word_vecs = pool(hidden, [w.pieces for w in p.words], "mean")
        sent_vecs = pool(word_vecs, p.sentence_words, "sqrt")
        content = [j for j, w in enumerate(p.words) if w.content]
        return EncodedText(
            words=tuple(p.words[j].text for j in content),
            word_vectors=word_vecs[content],
            sentences=tuple(p.sentences),
            sentence_vectors=sent_vecs,
            document_vector=document_vector(sent_vecs),
            truncated=p.truncated,
        )
