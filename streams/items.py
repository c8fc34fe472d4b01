"""Item encodings: encoded once when the item's `items` event arrives, then reused.

A bounded LRU cache in front of Qdrant `items`, whose payload keeps each item's
`TextVectors` (streams/sink.py), so a click on a known item never re-encodes it, also on
a worker that did not see the item's event. New items are upserted to Qdrant in the
background; while Qdrant is down they stay pending (and in the cache) and are retried.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from streams.events import ItemEvent
from streams.sink import ItemPoint, QdrantSink, text_vectors_from_payload, text_vectors_to_payload
from streams.state import TextVectors

log = logging.getLogger("streams.items")

Blocking = Callable[..., Awaitable[Any]]  # runs a blocking call off the event loop


class ItemCache:
    def __init__(self, sink: QdrantSink, size: int, run: Blocking) -> None:
        self.sink = sink
        self.size = size
        self.run = run
        self._cache: OrderedDict[str, tuple[str | None, TextVectors]] = OrderedDict()
        self._pending: dict[str, ItemPoint] = {}
        self.lookups = 0  # Qdrant retrieve calls for cache misses
        self.lookup_failures = 0

    def __len__(self) -> int:
        return len(self._cache)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _remember(self, item_id: str, text_hash: str | None, tv: TextVectors) -> None:
        self._cache[item_id] = (text_hash, tv)
        self._cache.move_to_end(item_id)
        while len(self._cache) > self.size:
            self._cache.popitem(last=False)

    def is_current(self, item_id: str, text: str) -> bool:
        """True when the cached encoding of the item is of this very text."""
        hit = self._cache.get(item_id)
        return hit is not None and hit[0] == hash_text(text)

    def put(self, item: ItemEvent, vectors: TextVectors) -> None:
        text_hash = hash_text(item.text())
        self._remember(item.item_id, text_hash, vectors)
        self._pending[item.item_id] = ItemPoint(
            item_id=item.item_id,
            vector=vectors.document,
            payload={
                "item_id": item.item_id,
                "title": item.title,
                "tags": list(item.tags),
                "ts": item.ts,
                "text_hash": text_hash,
                "text": text_vectors_to_payload(vectors),
            },
        )

    async def get(self, item_ids: Collection[str]) -> dict[str, TextVectors]:
        """Encodings of the known items among `item_ids` (cache first, then one Qdrant call).

        Qdrant failing counts as "not known yet": the clicks wait, the stream goes on.
        """
        found: dict[str, TextVectors] = {}
        missing = []
        for i in item_ids:
            hit = self._cache.get(i)
            if hit is None:
                missing.append(i)
            else:
                self._cache.move_to_end(i)
                found[i] = hit[1]
        if not missing:
            return found
        self.lookups += 1
        try:
            payloads = await self.run(self.sink.get_items, missing)
        except Exception as err:
            self.lookup_failures += 1
            log.warning("item lookup in Qdrant failed (%s); clicks wait for their items", err)
            return found
        for item_id, payload in payloads.items():
            try:
                tv = text_vectors_from_payload(payload["text"], dim=self.sink.dim)
            except (KeyError, TypeError, ValueError) as err:
                log.warning("item %r in Qdrant has no usable encoding: %s", item_id, err)
                continue
            self._remember(item_id, payload.get("text_hash"), tv)
            found[item_id] = tv
        return found

    async def flush(self) -> bool:
        """Upsert pending items in one call; False (kept pending) when Qdrant failed."""
        if not self._pending:
            return True
        points, self._pending = self._pending, {}
        try:
            await self.run(self.sink.upsert_items, list(points.values()))
            return True
        except Exception as err:
            log.warning("upserting %d items failed (%s); will retry", len(points), err)
            self._pending = {**points, **self._pending}
            return False


def hash_text(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
