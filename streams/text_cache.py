"""Encodings of recent user texts, so that a repeated search is not encoded again.

Search traffic repeats (head queries), and the CPU encoder is the costliest step of a
batch with text in it (bench/RESULTS.md, Pipeline): a text seen lately reuses its
`TextVectors`. Within one batch the worker already encodes each distinct text once; this
carries that across batches.

What it keeps, given that the service keeps no raw event text beyond what the state
needs: keys are BLAKE2b digests of (kind, text) under a key drawn at random per process
(no text, and no digest that a guessed text could be checked against elsewhere); values
are `TextVectors`, the summed vectors and content-word counts the state itself takes. It
lives in memory only, bounded by entries and by age, and the worker empties it whenever a
batch erases a user and whenever partitions move (streams/worker.py), so no encoding of a
deleted user's text outlives the deletion.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TextCache(Generic[V]):
    """Least-recently-used map (kind, text) -> value, at most `max_entries`, each at most
    `max_age_s` seconds after it was stored.

    >>> c = TextCache[int](max_entries=2, max_age_s=60)
    >>> c.put("query", "rust", 1); c.put("query", "go", 2); c.get("query", "rust")
    1
    >>> c.put("query", "zig", 3)  # "go" was used least recently
    >>> c.get("query", "go") is None, c.get("passage", "rust") is None, len(c)
    (True, True, 2)
    """

    def __init__(
        self,
        max_entries: int,
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 0 or not max_age_s > 0:
            raise ValueError("max_entries must be >= 0 and max_age_s > 0")
        self.max_entries = max_entries
        self.max_age_s = max_age_s
        self.clock = clock
        self._secret = os.urandom(32)
        self._entries: OrderedDict[bytes, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, kind: str, text: str) -> bytes:
        data = kind.encode() + b"\0" + text.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, key=self._secret, digest_size=16).digest()

    def get(self, kind: str, text: str) -> V | None:
        key = self._key(kind, text)
        hit = self._entries.get(key)
        if hit is None:
            return None
        stored_at, value = hit
        if self.clock() - stored_at > self.max_age_s:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, kind: str, text: str, value: V) -> None:
        if self.max_entries == 0:
            return
        key = self._key(kind, text)
        self._entries[key] = (self.clock(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
