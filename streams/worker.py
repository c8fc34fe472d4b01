"""The worker's core: a micro-batch of Kafka messages in; table writes, dead letters out.

No Faust and no Qdrant in here: reading the table, the item store and the encoder are
injected, so the same code runs under the Faust agent (streams/app.py) and in tests.

One batch, in order:
1. validate every message (schema, key = user id or item id); failures -> dead letters;
2. encode new item texts in one call and hand them to the item store;
3. look up the items of all clicks at once (cache, then the store);
4. encode the batch's unique search/comment texts (and texts of clicks on unknown items)
   in one call per kind, but for those encoded lately (streams/text_cache.py);
5. per user in arrival order: skip replayed offsets and repeated event ids, erase on
   delete, park clicks whose item is unknown, collect the rest;
6. apply everything collected with one `apply_batch`.
Texts the encoder rejects become dead letters; the rest of the batch goes on.

A message re-delivered after a crash (its offset already claimed in the user's record) is
not applied again, but the record is written again: the crashed worker may have written it
to its local RocksDB and died before the write reached the changelog topic. Offsets are
committed only after the changelog is flushed, so the rewrite puts those events in the
changelog (what a worker taking over the partition restores) before they are committed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from streams.events import (
    MAX_MESSAGE_BYTES,
    TOPIC_TYPES,
    ClickEvent,
    CommentEvent,
    DeleteEvent,
    InvalidEvent,
    ItemEvent,
    SearchEvent,
    parse_event,
)
from streams.profile import encoded_event
from streams.record import ParkedClick, RecordDecodeError, UserRecord
from streams.state import EncodedEvent, EventBatch, StateParams, TextVectors, apply_batch
from streams.text_cache import TextCache

log = logging.getLogger("streams.worker")

UserEvent = ClickEvent | SearchEvent | CommentEvent

# A dead letter must fit in one Kafka message (Faust's producer sends at most 1,000,000
# bytes): it keeps the first DLQ_MAX_VALUE bytes of the original (all of any message the
# schema could accept), as base64, and as text only up to DLQ_MAX_TEXT (JSON escaping may
# make text 6x longer); with the key, reason and the rest, at most ~750 KB.
DLQ_MAX_VALUE = MAX_MESSAGE_BYTES
DLQ_MAX_TEXT = 64 * 1024
DLQ_MAX_KEY = 1024
DLQ_MAX_REASON = 2000


@dataclass(frozen=True)
class Message:
    """The part of a Kafka record the worker needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None  # seconds


@dataclass(frozen=True)
class DeadLetter:
    message: Message
    reason: str
    error: str  # a class name: InvalidEvent, KeyMismatch, EncodeError, ItemNotFound, ...

    @property
    def key(self) -> bytes | None:
        """The dead letter's own Kafka key: the original's, cut to DLQ_MAX_KEY bytes."""
        k = self.message.key
        return None if k is None else k[:DLQ_MAX_KEY]

    def to_bytes(self, now: float | None = None) -> bytes:
        """The DLQ value: the original bytes (base64, and as text when UTF-8) and where from.

        Originals longer than DLQ_MAX_VALUE keep their first DLQ_MAX_VALUE bytes
        (`truncated`; `value_bytes` and `value_sha256` describe the whole).
        """
        m = self.message
        raw = m.value or b""
        text: str | None = None
        if len(raw) <= DLQ_MAX_TEXT:
            with contextlib.suppress(UnicodeDecodeError):
                text = raw.decode("utf-8")
        key = self.key
        doc = {
            "topic": m.topic,
            "partition": m.partition,
            "offset": m.offset,
            "key": None if key is None else base64.b64encode(key).decode(),
            "value_b64": base64.b64encode(raw[:DLQ_MAX_VALUE]).decode(),
            "value": text,
            "value_bytes": len(raw),
            "value_sha256": hashlib.sha256(raw).hexdigest(),
            "truncated": len(raw) > DLQ_MAX_VALUE or (m.key is not None and key != m.key),
            "reason": self.reason[:DLQ_MAX_REASON],
            "error": self.error,
            "dead_lettered_at": time.time() if now is None else now,
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


class TextEncoder(Protocol):
    dim: int

    def encode(self, texts: Sequence[str], kind: str = "passage") -> list[Any]: ...


class ItemStore(Protocol):
    """Item encodings: a cache in front of Qdrant `items` (streams/items.py)."""

    async def get(self, item_ids: Collection[str]) -> dict[str, TextVectors]: ...

    def is_current(self, item_id: str, text: str) -> bool: ...

    def put(self, item: ItemEvent, vectors: TextVectors) -> None: ...


@dataclass
class Write:
    """A user's new record and its bytes; `context` is a message of the user's partition,
    so the table write lands in that partition's changelog."""

    record: UserRecord
    context: Message
    data: bytes = b""


@dataclass
class BatchResult:
    writes: dict[str, Write] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    updated: dict[str, float] = field(default_factory=dict)  # user -> newest event time applied
    # user -> newest Kafka timestamp (publish time) among the messages applied: freshness
    published: dict[str, float] = field(default_factory=dict)
    deleted: set[str] = field(default_factory=set)
    counts: Counter[str] = field(default_factory=Counter)
    clicked: list[tuple[str, float]] = field(default_factory=list)  # (item, ts) applied
    applied_topics: Counter[str] = field(default_factory=Counter)  # for metrics
    # distinct user texts of the batch: "encoded" now, or "cached" (streams/text_cache.py)
    texts: Counter[str] = field(default_factory=Counter)


Loader = Callable[[str, Message], Awaitable[bytes | None] | bytes | None]


class Processor:
    """Turns micro-batches into state changes; keeps running totals in `totals`.

    Totals: consumed = applied + duplicates + erased (published before their user's
    deletion) + dead_lettered + parked (clicks waiting for their item) + items + deletes,
    for every batch; parked clicks later move to applied or dead_lettered (`resume`).
    """

    def __init__(
        self,
        encoder: TextEncoder,
        items: ItemStore,
        params: StateParams | None = None,
        *,
        park_max_wait_s: float = 60.0,
        park_max_per_user: int = 32,
        park_max_bytes: int = 256 * 1024,
        dedupe_window: int = 128,
        record_cache_size: int = 10_000,
        text_cache_size: int = 10_000,
        text_cache_max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.encoder = encoder
        self.items = items
        self.params = params or StateParams()
        self.park_max_wait_s = park_max_wait_s
        self.park_max_per_user = park_max_per_user
        # the parked messages live in the user's record, and so in one changelog message
        self.park_max_bytes = park_max_bytes
        self.dedupe_window = dedupe_window
        self.clock = clock
        self.totals: Counter[str] = Counter()
        # decoded records of recently active users, with the bytes they were decoded from:
        # a user in consecutive batches is not decoded again as long as the table still
        # holds exactly those bytes
        self.record_cache_size = record_cache_size
        self._records: OrderedDict[str, tuple[bytes, UserRecord]] = OrderedDict()
        self.texts = TextCache[TextVectors](text_cache_size, text_cache_max_age_s)
        self.text_totals: Counter[str] = Counter()  # user texts: "encoded", "cached"

    @property
    def dim(self) -> int:
        return int(self.encoder.dim)

    # -- one batch --------------------------------------------------------------------------

    async def process(self, messages: Sequence[Message], load: Loader) -> BatchResult:
        try:
            res = await self._process(messages, load)
        except BaseException:
            self._records.clear()  # cached records may hold half-applied changes
            raise
        self._seal(res)
        return res

    def _seal(self, res: BatchResult) -> None:
        """Encode the batch's records once, for the table and the cache."""
        for user, w in res.writes.items():
            w.data = w.record.to_bytes()
            self._records[user] = (w.data, w.record)
            self._records.move_to_end(user)
        while len(self._records) > self.record_cache_size:
            self._records.popitem(last=False)

    async def _process(self, messages: Sequence[Message], load: Loader) -> BatchResult:
        res = BatchResult()
        res.counts["consumed"] = len(messages)
        parsed = self._validate(messages, res)

        await self._take_items([(m, e) for m, e in parsed if isinstance(e, ItemEvent)], res)

        by_user: dict[str, list[tuple[Message, Any]]] = {}
        for m, e in parsed:
            if not isinstance(e, ItemEvent):
                by_user.setdefault(e.user_id, []).append((m, e))
        click_items = {
            e.item_id for evs in by_user.values() for _, e in evs if isinstance(e, ClickEvent)
        }
        known = await self.items.get(click_items) if click_items else {}

        queries: list[str] = []
        own_texts: list[str] = []
        for evs in by_user.values():
            for _, e in evs:
                if isinstance(e, SearchEvent):
                    queries.append(e.query)
                elif isinstance(e, CommentEvent):
                    queries.append(e.text)
                elif isinstance(e, ClickEvent) and e.item_id not in known and e.text:
                    own_texts.append(e.text)
        encoded = {
            "query": await self._encode_user_texts(queries, "query", res),
            "passage": await self._encode_user_texts(own_texts, "passage", res),
        }

        rows: list[tuple[str, EncodedEvent]] = []
        # texts encoded in this batch and applied for a live user: they may be cached
        cacheable: dict[tuple[str, str], TextVectors] = {}
        for user, evs in by_user.items():
            record = await self._load(load, user, evs[0][0])
            record, changed = self._delete_first(user, record, evs, res)
            user_rows: list[tuple[str, EncodedEvent]] = []
            for m, e in evs:
                if isinstance(e, DeleteEvent):
                    continue
                record = record or UserRecord.new(self.dim, self.params)
                changed = True  # a re-delivered offset too (module docstring)
                if not record.state.claim(m.topic, m.partition, m.offset):
                    res.counts["duplicates"] += 1  # a re-delivered offset
                    continue
                if record.erased_before(m.timestamp):
                    res.counts["erased"] += 1  # published before the user's deletion
                    continue
                if record.seen_event(e.event_id, self.dedupe_window):
                    res.counts["duplicates"] += 1  # the same event published twice
                    continue
                text, failure, source = self._text_for(e, known, encoded)
                if failure is not None:
                    res.dead_letters.append(DeadLetter(m, failure, "EncodeError"))
                    res.counts["dead_lettered"] += 1
                    continue
                if text is None and isinstance(e, ClickEvent):
                    self._park(record, m, e, res)
                    continue
                user_rows.append((user, encoded_event(e, text)))
                if source is not None and text is not None:
                    cacheable[source] = text
                res.applied_topics[m.topic] += 1
                if m.timestamp is not None:
                    res.published[user] = max(res.published.get(user, 0.0), m.timestamp)
            rows += user_rows
            if user_rows:
                record.erased = False  # events published after a deletion start afresh
                res.deleted.discard(user)
            if changed:
                res.writes[user] = Write(record, evs[-1][0])
        if res.deleted or res.counts["erased"]:
            # a deleted user's texts may be among the cached ones: no trace may outlive
            # the deletion, and deletions are rare enough to start over
            self.texts.clear()
        else:
            for (kind, text), vectors in cacheable.items():
                self.texts.put(kind, text, vectors)
        self._apply(rows, res)
        self.totals.update(res.counts)
        self.text_totals.update(res.texts)
        return res

    def _delete_first(
        self,
        user: str,
        record: UserRecord | None,
        evs: list[tuple[Message, Any]],
        res: BatchResult,
    ) -> tuple[UserRecord | None, bool]:
        """Apply the batch's deletions of `user` before its events.

        Kafka orders messages within a partition only, and deletions come on their own
        topic, so a deletion may arrive before events that were published earlier. The
        rule is by publish time (Kafka timestamp): a deletion erases every event of the
        user published up to it, whenever it arrives; later events start a new profile.
        A re-delivered deletion (offset already handled) only rewrites the record. A
        deletion's time is at most the time it is applied (a forged future timestamp).
        """
        fresh = []
        redelivered = False
        now = time.time()
        for m, e in evs:
            if isinstance(e, DeleteEvent):
                record = record or UserRecord.new(self.dim, self.params)
                if record.state.claim(m.topic, m.partition, m.offset):
                    # a producer sets the Kafka timestamp: one forged far into the future
                    # would erase every event of the user until then
                    fresh.append(None if m.timestamp is None else min(m.timestamp, now))
                else:
                    res.counts["duplicates"] += 1
                    redelivered = True
        if not fresh:
            return record, redelivered
        assert record is not None
        record.erase(max((t for t in fresh if t is not None), default=None))
        res.deleted.add(user)
        res.counts["deletes"] += len(fresh)
        return record, True

    def _validate(self, messages: Iterable[Message], res: BatchResult) -> list[tuple[Message, Any]]:
        parsed = []
        for m in messages:
            kind = TOPIC_TYPES.get(m.topic)
            try:
                if kind is None:
                    raise InvalidEvent(f"not an input topic: {m.topic}")
                if m.value is None:
                    raise InvalidEvent("no value (a tombstone on an input topic)")
                e = parse_event(m.value, kind)
            except InvalidEvent as err:
                res.dead_letters.append(DeadLetter(m, err.reason, "InvalidEvent"))
                res.counts["dead_lettered"] += 1
                continue
            # state is partitioned by user: a message keyed otherwise would be applied on
            # a partition (and changelog) that does not own the user
            want = e.item_id if isinstance(e, ItemEvent) else e.user_id
            if m.key is None or m.key != want.encode():
                got = "no key" if m.key is None else f"key {m.key[:64]!r}"
                field_name = "item_id" if isinstance(e, ItemEvent) else "user_id"
                reason = f"message has {got}, expected its {field_name} {want!r}"
                res.dead_letters.append(DeadLetter(m, reason, "KeyMismatch"))
                res.counts["dead_lettered"] += 1
                continue
            parsed.append((m, e))
        return parsed

    async def _take_items(self, items: list[tuple[Message, ItemEvent]], res: BatchResult) -> None:
        latest = {e.item_id: (m, e) for m, e in items}  # a later version in the batch wins
        res.counts["items"] += len(items)
        fresh = [
            (m, e) for m, e in latest.values() if not self.items.is_current(e.item_id, e.text())
        ]
        if fresh:  # after a restart the cache is cold: what the store has may be current
            await self.items.get([e.item_id for _, e in fresh])
            fresh = [(m, e) for m, e in fresh if not self.items.is_current(e.item_id, e.text())]
        if not fresh:
            return
        encoded = await self._encode([e.text() for _, e in fresh], "passage")
        for m, e in fresh:
            got = encoded[e.text()]
            if isinstance(got, str):
                res.counts["items"] -= 1
                res.counts["dead_lettered"] += 1
                res.dead_letters.append(DeadLetter(m, got, "EncodeError"))
            else:
                self.items.put(e, got)

    async def _encode_user_texts(
        self, texts: list[str], kind: str, res: BatchResult
    ) -> dict[str, tuple[TextVectors | str, bool]]:
        """Unique texts -> (vectors or the reason they could not be encoded, whether they
        were encoded now rather than found in the text cache)."""
        out: dict[str, tuple[TextVectors | str, bool]] = {}
        todo = []
        for text in dict.fromkeys(texts):
            hit = self.texts.get(kind, text)
            if hit is None:
                todo.append(text)
            else:
                out[text] = (hit, False)
        res.texts["cached"] += len(out)
        res.texts["encoded"] += len(todo)
        for text, got in (await self._encode(todo, kind)).items():
            out[text] = (got, True)
        return out

    def forget_texts(self) -> None:
        """Partitions moved: their users' deletions now reach another worker."""
        self.texts.clear()

    async def _encode(self, texts: list[str], kind: str) -> dict[str, TextVectors | str]:
        """Unique texts -> vectors, or the reason a text could not be encoded."""
        unique = list(dict.fromkeys(texts))
        result: dict[str, TextVectors | str] = {}
        if unique:
            await self._encode_into(unique, kind, result)
        return result

    async def _encode_into(
        self, texts: list[str], kind: str, result: dict[str, TextVectors | str], top: bool = True
    ) -> None:
        """One bad text must not sink the batch: when a call fails, encode each half on its
        own, down to single texts, so k bad texts among n cost about 2k·log2(n) calls
        rather than n."""
        try:
            out = await asyncio.to_thread(self.encoder.encode, texts, kind)
        except Exception as err:
            if len(texts) == 1:
                result[texts[0]] = f"text could not be encoded: {type(err).__name__}: {err}"
                return
            if top:
                log.warning("encoding %d texts failed; retrying in halves", len(texts))
            half = len(texts) // 2
            await self._encode_into(texts[:half], kind, result, top=False)
            await self._encode_into(texts[half:], kind, result, top=False)
            return
        result.update((t, TextVectors.of(o)) for t, o in zip(texts, out, strict=True))

    async def _load(self, load: Loader, user: str, context: Message) -> UserRecord | None:
        raw = load(user, context)
        if asyncio.iscoroutine(raw) or isinstance(raw, Awaitable):
            raw = await raw
        if raw is None:
            self._records.pop(user, None)
            return None
        hit = self._records.get(user)
        if hit is not None and hit[0] == raw:
            self._records.move_to_end(user)
            return hit[1]
        try:
            return UserRecord.from_bytes(raw, self.params)
        except RecordDecodeError:
            # only a bug or disk corruption gets here; starting over beats a crash loop
            log.exception("user %r: stored record unreadable; starting a new one", user)
            self.totals["records_unreadable"] += 1
            return None

    def _text_for(
        self, e: UserEvent, known: dict[str, TextVectors], encoded: dict[str, dict]
    ) -> tuple[TextVectors | None, str | None, tuple[str, str] | None]:
        """(vectors or None, failure reason or None, (kind, text) when the text was
        encoded in this batch and may go into the text cache) for one event."""
        if isinstance(e, SearchEvent | CommentEvent):
            kind, text = "query", e.query if isinstance(e, SearchEvent) else e.text
        elif e.item_id in known:
            return known[e.item_id], None, None
        elif e.text:
            kind, text = "passage", e.text
        else:
            return None, None, None
        got, fresh = encoded[kind][text]
        if isinstance(got, str):
            return None, got, None
        return got, None, (kind, text) if fresh else None

    def _park(self, record: UserRecord, m: Message, e: ClickEvent, res: BatchResult) -> None:
        waiting = sum(len(p.value) for p in record.parked)
        if (
            len(record.parked) >= self.park_max_per_user
            or waiting + len(m.value or b"") > self.park_max_bytes
        ):
            reason = (
                f"item {e.item_id!r} unknown and {len(record.parked)} clicks of this user "
                f"({waiting:,} bytes) already wait for their items"
            )
            res.dead_letters.append(DeadLetter(m, reason, "ItemNotFound"))
            res.counts["dead_lettered"] += 1
            return
        record.parked.append(
            ParkedClick(
                e.item_id, m.topic, m.partition, m.offset, m.key, m.value or b"", self.clock()
            )
        )
        res.counts["parked"] += 1

    def _apply(self, rows: list[tuple[str, EncodedEvent]], res: BatchResult) -> None:
        if not rows:
            return
        slots: dict[str, int] = {}
        states = []
        for user, _ in rows:
            if user not in slots:
                slots[user] = len(states)
                states.append(res.writes[user].record.state)
        events = [ev for _, ev in rows]
        batch = EventBatch.from_events([slots[u] for u, _ in rows], events, self.dim, self.params)
        apply_batch(states, batch)
        now = self.clock()
        for user, ev in rows:
            res.updated[user] = max(res.updated.get(user, ev.ts), ev.ts)
            if ev.kind == "click" and ev.item_id is not None:
                res.clicked.append((ev.item_id, ev.ts))
            changed = res.writes[user].record.changed_at
            for g in _channels_touched(ev, self.params):
                changed[g] = now
        res.counts["applied"] += len(rows)

    # -- parked clicks ----------------------------------------------------------------------

    async def resume(self, parked: dict[str, tuple[UserRecord, Message]]) -> BatchResult:
        """Apply parked clicks whose item has arrived; dead-letter those waiting too long.

        `parked` maps users to their current record and a message of their partition.
        """
        res = BatchResult()
        wanted = {p.item_id for rec, _ in parked.values() for p in rec.parked}
        known = await self.items.get(wanted) if wanted else {}
        now = self.clock()
        rows: list[tuple[str, EncodedEvent]] = []
        for user, (record, context) in parked.items():
            keep: list[ParkedClick] = []
            for p in record.parked:
                msg = Message(p.topic, p.partition, p.offset, p.key, p.value)
                if p.item_id in known:
                    try:
                        e = parse_event(p.value, "click")
                    except InvalidEvent as err:  # validated when parked; only if rules changed
                        res.dead_letters.append(DeadLetter(msg, err.reason, "InvalidEvent"))
                        res.counts["dead_lettered"] += 1
                        continue
                    assert isinstance(e, ClickEvent)
                    rows.append((user, encoded_event(e, known[p.item_id])))
                    res.applied_topics[p.topic] += 1
                elif now - p.parked_at > self.park_max_wait_s:
                    reason = f"item {p.item_id!r} not seen within {self.park_max_wait_s:g} s"
                    res.dead_letters.append(DeadLetter(msg, reason, "ItemNotFound"))
                    res.counts["dead_lettered"] += 1
                else:
                    keep.append(p)
            if len(keep) != len(record.parked):
                record.parked = keep
                res.writes[user] = Write(record, context)
        self._apply(rows, res)
        res.counts["parked"] = -(len(rows) + res.counts["dead_lettered"])  # moved on
        self.totals.update(res.counts)
        self._seal(res)
        return res


def _channels_touched(ev: EncodedEvent, params: StateParams) -> list[int]:
    """Which of word, sentence, document, negative (0..3) an applied event changes."""
    text = ev.text
    if text is None:
        return []
    w = ev.weight(params)
    if w < 0:
        return [3] if text.has_document else []
    if w == 0:
        return []
    return [g for g, n in enumerate((text.n_words, text.n_sentences, text.has_document)) if n]
