"""Pure text handling around the tokenizer: sentence splitting, subword -> word merging,
and which words carry content. No model, no I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from encoders.stopwords import STOPWORDS

# A sentence ends at 。！？；!?; (runs of them), at a '.' that is not inside a number
# (3.14), or at a line break; closing quotes/brackets stay with the sentence they close.
_BOUNDARY = re.compile(r"(?:[。！？；!?;]+|\.+(?!\d))[\"'”’」』)）\]]*|\n+")

SubwordStyle = Literal["sentencepiece", "wordpiece"]
_SP_MARK = "▁"
_WP_MARK = "##"


def split_sentences(text: str) -> list[str]:
    """Split before tokenizing, keeping each terminator with its sentence.

    Pieces with no letter or digit (a stray "..." or "!!") join the sentence before them.

    >>> split_sentences("我爱看电影。特别喜欢科幻片！Great. Pi is 3.14\\nok?")
    ['我爱看电影。', '特别喜欢科幻片！', 'Great.', 'Pi is 3.14', 'ok?']
    >>> split_sentences("Wait... what?!")
    ['Wait...', 'what?!']
    """
    pieces: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        pieces.append(text[start : m.end()])
        start = m.end()
    pieces.append(text[start:])
    sentences: list[str] = []
    for piece in pieces:
        piece = piece.strip()
        if not piece:
            continue
        if sentences and not any(ch.isalnum() for ch in piece):
            sentences[-1] += piece
        else:
            sentences.append(piece)
    return sentences


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2FA1F
        or 0xF900 <= cp <= 0xFAFF
        or 0x3040 <= cp <= 0x30FF  # kana
        or 0xAC00 <= cp <= 0xD7AF  # hangul
    )


@dataclass(frozen=True)
class Word:
    """A run of subword pieces that forms one word; `pieces` index the token sequence."""

    text: str
    pieces: tuple[int, ...]
    content: bool


def is_content_word(word: str) -> bool:
    """Words that say something about interests: not stopwords, not bare punctuation.

    >>> [is_content_word(w) for w in ["科幻", "the", "的", "!", "Films", "2024"]]
    [True, False, False, False, True, True]
    """
    return any(ch.isalnum() for ch in word) and word.lower() not in STOPWORDS


def merge_subwords(tokens: Sequence[str], style: SubwordStyle, offset: int = 0) -> list[Word]:
    """Group subword pieces into words; piece i gets index offset + i.

    WordPiece marks continuations with '##'. SentencePiece marks word starts with '▁';
    a piece without it continues the previous word, except across CJK characters or
    punctuation, where XLM-R's vocabulary has no spaces to mark anything. A bare '▁'
    only marks a boundary.

    >>> pieces = ["▁Real", "ly", "▁great", "!", "▁我", "爱", "电影"]
    >>> [w.text for w in merge_subwords(pieces, "sentencepiece")]
    ['Really', 'great', '!', '我', '爱', '电影']
    >>> [(w.text, w.pieces) for w in merge_subwords(["sci", "##fi", "films"], "wordpiece", 1)]
    [('scifi', (1, 2)), ('films', (3,))]
    """
    groups: list[tuple[str, list[int]]] = []
    boundary = True
    for i, tok in enumerate(tokens):
        if style == "wordpiece":
            cont = tok.startswith(_WP_MARK)
            piece = tok[len(_WP_MARK) :] if cont else tok
        else:
            starts = tok.startswith(_SP_MARK)
            piece = tok[len(_SP_MARK) :] if starts else tok
            if not piece:  # a bare '▁' before CJK text or punctuation
                boundary = True
                continue
            prev = groups[-1][0] if groups else ""
            cont = (
                not starts
                and not boundary
                and bool(prev)
                and prev[-1].isalnum()
                and piece[0].isalnum()
                and not _is_cjk(prev[-1])
                and not _is_cjk(piece[0])
            )
        if cont and groups:
            text, idx = groups[-1]
            groups[-1] = (text + piece, [*idx, offset + i])
        else:
            groups.append((piece, [offset + i]))
        boundary = False
    return [Word(t, tuple(idx), is_content_word(t)) for t, idx in groups]
