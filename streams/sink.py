"""The Qdrant side: idempotent batched writes of user and item vectors.

Points are keyed by UUID5 of the user or item id, so writing the same state twice is harmless
and a retry never duplicates anything. `QdrantSink` is a thin synchronous facade over
`qdrant_client.QdrantClient` (a server URL, or local mode on disk, which is the embedded
default); it never retries. The streaming worker talks to `SyncQueue`
(streams/sync_queue.py): it keeps only the latest pending state per user and writes it from
a background task with backoff, so the stream never waits for Qdrant and an outage loses
nothing.

Item payloads can carry an item's encoded text (`text_vectors_to_payload`), so that a click
on a known item reuses its cached encoding instead of running the encoder again.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import math
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from streams.state import TextVectors

USERS = "users"
ITEMS = "items"
USER_VECTORS: tuple[str, ...] = ("word", "sentence", "document", "fused", "negative")
ITEM_VECTOR = "document"
MEMORY = ":memory:"  # `path=MEMORY`: local mode without files (tests, doctests)
_INDEXES = ((USERS, "user_id"), (ITEMS, "tags"))  # keyword payload indexes (server only)
_PAYLOAD_VERSION = 1
ENGINES = ("local", "edge", "local-process")  # embedded engines, see `QdrantSink`

log = logging.getLogger(__name__)

__all__ = [
    "ITEMS",
    "ITEM_VECTOR",
    "USERS",
    "USER_VECTORS",
    "CollectionMismatchError",
    "ItemPoint",
    "QdrantSink",
    "UserPoint",
    "item_point_id",
    "text_vectors_from_payload",
    "text_vectors_to_payload",
    "tune_local_storage",
    "user_point_id",
]


@lru_cache(maxsize=1 << 16)  # a point written per changed user and batch: the same ids recur
def user_point_id(user_id: str) -> str:
    """Qdrant point id of a user: deterministic, so upserts by it are idempotent.

    The value is part of the stored data: changing it would orphan every existing point.

    >>> user_point_id("alice")
    '0ec47c19-f7ce-58a8-b88e-23e66c6a986b'
    >>> user_point_id("alice") != item_point_id("alice")
    True
    """
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "interest-stream/user/" + user_id))


def item_point_id(item_id: str) -> str:
    """Qdrant point id of an item (a different namespace from users, see `user_point_id`)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "interest-stream/item/" + item_id))


class CollectionMismatchError(RuntimeError):
    """An existing collection has other vectors than this service needs. Never auto-fixed:
    recreating it would drop its data."""


# -- points ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class UserPoint:
    """A user's vectors and payload as written to `users`.

    A vector given as None (channel absent, e.g. no negative feedback yet) is left out of the
    point; Qdrant lets a point carry any subset of the named vectors. An upsert replaces the
    whole point, so a channel left out is removed from Qdrant too.
    """

    user_id: str
    vectors: Mapping[str, np.ndarray | None]
    payload: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.vectors) - set(USER_VECTORS)
        if unknown:
            raise ValueError(f"unknown user vectors {sorted(unknown)}; known: {USER_VECTORS}")

    @property
    def published_at(self) -> float | None:
        """Kafka timestamp of the newest event behind the point (freshness), if given."""
        return self.payload.get("published_at")


@dataclass(frozen=True)
class RecordPoint:
    """A user point still to be built from the user's table record (`UserRecord` bytes),
    where it is written (streams/user_points.py)."""

    user_id: str
    record: bytes
    published_at: float | None = None


@dataclass(frozen=True, eq=False)
class ItemPoint:
    """An item's document vector and payload (item_id, title, tags, cached text vectors)."""

    item_id: str
    vector: np.ndarray
    payload: Mapping[str, Any] = field(default_factory=dict)


def _vector(v: Any, dim: int, what: str) -> np.ndarray | None:
    """A finite [dim] float32 vector (what Qdrant stores); None for an all-zero one (no
    direction: useless to cosine search, so it is left out like an absent channel)."""
    a = np.asarray(v, dtype=np.float32)
    if a.shape != (dim,):
        raise ValueError(f"{what}: expected shape ({dim},), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: vector is not finite")
    return a if a.any() else None


def _payload(payload: Mapping[str, Any], key: str, value: str, what: str) -> dict[str, Any]:
    """The payload with its id field added, checked to be JSON now rather than at write time
    (in a `SyncQueue` a point that can never be written would block the ones behind it)."""
    out = {**payload, key: value}
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: payload is not plain JSON ({exc})") from None
    return out


def _user_parts(p: UserPoint, dim: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Checked vectors and payload of a user point (cheap: no pydantic, no lists)."""
    what = f"user {p.user_id!r}"
    named = {name: v for name, v in p.vectors.items() if v is not None}
    if all(isinstance(v, np.ndarray) and v.shape == (dim,) for v in named.values()):
        # the usual case (points built from states): one conversion and one check for all
        # the vectors, ~3x cheaper than one by one; rows are views of one float32 matrix
        rows = np.array(list(named.values()), dtype=np.float32).reshape(len(named), dim)
        if np.isfinite(rows).all():
            keep = rows.any(axis=1).tolist()
            vectors = {name: rows[i] for i, name in enumerate(named) if keep[i]}
            return vectors, _payload(p.payload, "user_id", p.user_id, what)
    vectors = {}
    for name, v in named.items():  # one by one, to name the culprit
        if (a := _vector(v, dim, f"{what} {name}")) is not None:
            vectors[name] = a
    return vectors, _payload(p.payload, "user_id", p.user_id, what)


def _struct(point_id: str, vectors: dict[str, np.ndarray], payload: dict, local: bool) -> Any:
    if local:
        # local mode keeps vectors as numpy anyway: handing it the checked float32 arrays
        # skips lists and pydantic validation, halving an upsert (0.68 -> 0.36 ms a point)
        return models.PointStruct.model_construct(id=point_id, vector=vectors, payload=payload)
    return models.PointStruct(
        id=point_id, vector={n: a.tolist() for n, a in vectors.items()}, payload=payload
    )


def _user_struct(p: UserPoint, dim: int, local: bool = False) -> models.PointStruct:
    vectors, payload = _user_parts(p, dim)
    return _struct(user_point_id(p.user_id), vectors, payload, local)


def _item_struct(p: ItemPoint, dim: int, local: bool = False) -> models.PointStruct:
    what = f"item {p.item_id!r}"
    a = _vector(p.vector, dim, what)
    payload = _payload(p.payload, "item_id", p.item_id, what)
    return _struct(item_point_id(p.item_id), {} if a is None else {ITEM_VECTOR: a}, payload, local)


# -- cached text vectors in a payload --------------------------------------------------------


def _b64(a: np.ndarray, what: str) -> str:
    a = np.asarray(a)
    if a.ndim != 1 or not np.isfinite(a).all():
        raise ValueError(f"{what} must be a finite 1-d array, got shape {a.shape}")
    return base64.b64encode(a.astype("<f4").tobytes()).decode("ascii")


def text_vectors_to_payload(tv: TextVectors) -> dict[str, Any]:
    """An item's encoded text as a JSON-safe payload field: float32 arrays as base64 of their
    little-endian bytes (exact for float32, ~1.4x smaller than JSON numbers).

    >>> from streams.state import summarize
    >>> tv = summarize(["Rust"], np.array([[3.0, 4.0]], np.float32),
    ...                document_vector=np.array([0.0, 2.0], np.float32))
    >>> d = text_vectors_to_payload(tv)
    >>> d["document"], d["n_words"], d["terms"]
    ('AAAAAAAAgD8=', 1, [['rust', 1]])
    >>> back = text_vectors_from_payload(d, dim=2)
    >>> back.word_sum.tolist(), back.terms
    ([0.6000000238418579, 0.800000011920929], (('rust', 1),))
    """
    return {
        "v": _PAYLOAD_VERSION,
        "dim": tv.dim,
        "word_sum": _b64(tv.word_sum, "word_sum"),
        "n_words": int(tv.n_words),
        "sentence_sum": _b64(tv.sentence_sum, "sentence_sum"),
        "n_sentences": int(tv.n_sentences),
        "document": _b64(tv.document, "document"),
        "terms": [[str(term), int(count)] for term, count in tv.terms],
    }


def _bad(msg: str) -> ValueError:
    return ValueError(f"malformed text vectors payload: {msg}")


def _count(d: Mapping[str, Any], key: str) -> int:
    n = d.get(key)
    if type(n) is not int or n < 0:  # bool is an int subclass: not a count
        raise _bad(f"{key} must be an int >= 0, got {n!r}")
    return n


def _array(d: Mapping[str, Any], key: str, dim: int) -> np.ndarray:
    s = d.get(key)
    if not isinstance(s, str):
        raise _bad(f"{key} must be a base64 string, got {type(s).__name__}")
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(f"{key} is not base64 ({exc})") from None
    if len(raw) != 4 * dim:
        raise _bad(f"{key} holds {len(raw)} bytes, expected {4 * dim} (dim {dim} float32)")
    a = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.isfinite(a).all():
        raise _bad(f"{key} is not finite")
    return a


def text_vectors_from_payload(d: Mapping[str, Any], dim: int | None = None) -> TextVectors:
    """Inverse of `text_vectors_to_payload`, with float32 arrays; `dim` (when given) must match.

    Anything malformed raises ValueError: a cached encoding that is wrong must not reach the
    interest state.

    >>> text_vectors_from_payload({"v": 1, "dim": 2})
    Traceback (most recent call last):
    ...
    ValueError: malformed text vectors payload: word_sum must be a base64 string, got NoneType
    """
    if not isinstance(d, Mapping):
        raise _bad(f"expected a mapping, got {type(d).__name__}")
    if d.get("v") != _PAYLOAD_VERSION:
        raise _bad(f"unknown version {d.get('v')!r} (this code reads {_PAYLOAD_VERSION})")
    stored = d.get("dim")
    if type(stored) is not int or stored < 1:
        raise _bad(f"dim must be a positive int, got {stored!r}")
    if dim is not None and stored != dim:
        raise _bad(f"vectors have dim {stored}, expected {dim} (encoded by another model?)")
    word_sum, sentence_sum, document = (
        _array(d, key, stored) for key in ("word_sum", "sentence_sum", "document")
    )
    norm = float(np.linalg.norm(document))
    if norm and abs(norm - 1.0) > 1e-3:
        raise _bad(f"document must be unit length or zeros, has norm {norm:.4g}")
    terms = d.get("terms", [])
    if not isinstance(terms, list):
        raise _bad(f"terms must be a list, got {type(terms).__name__}")
    pairs = []
    for pair in terms:
        if not (
            isinstance(pair, list | tuple)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and type(pair[1]) is int
            and pair[1] > 0
        ):
            raise _bad(f"each term must be [str, int > 0], got {pair!r}")
        pairs.append((pair[0], pair[1]))
    return TextVectors(
        word_sum=word_sum,
        n_words=_count(d, "n_words"),
        sentence_sum=sentence_sum,
        n_sentences=_count(d, "n_sentences"),
        document=document,
        terms=tuple(pairs),
    )


# -- the sink --------------------------------------------------------------------------------


class QdrantSink:
    """Synchronous, batched, idempotent writes to the `users` and `items` collections.

    Exactly one of `url` (a Qdrant server) or `path` (qdrant-client local mode in that
    directory; `path=":memory:"` keeps nothing on disk; with `engine="edge"`, Qdrant Edge
    shards there instead, see streams/edge_client.py; with `engine="local-process"`, the
    same local mode in a child process, see streams/qdrant_process.py). Local mode locks its
    directory, so one process at a time. Errors propagate: retrying is the caller's job
    (`SyncQueue`).

    >>> sink = QdrantSink.memory(dim=3)
    >>> sink.ensure_collections()
    >>> vectors = {"document": np.array([3.0, 0.0, 4.0]), "negative": None}
    >>> sink.upsert_users([UserPoint("alice", vectors, {"counts": {"click": 1}})])
    >>> got, payload = sink.get_users(["alice", "bob"])["alice"]
    >>> {k: [round(x, 3) for x in v] for k, v in got.items()}  # cosine: stored normalised
    {'document': [0.6, 0.0, 0.8]}
    >>> payload
    {'counts': {'click': 1}, 'user_id': 'alice'}
    >>> sink.close()
    """

    def __init__(
        self,
        dim: int,
        *,
        url: str | None = None,
        path: str | Path | None = None,
        timeout: float = 5.0,
        api_key: str | None = None,
        engine: str = "local",
    ) -> None:
        if type(dim) is not int or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        if (url is None) == (path is None):
            raise ValueError("give exactly one of url (Qdrant server) or path (local mode)")
        self.dim = dim
        self.local = url is None
        # Local mode is plain Python over numpy and sqlite: not safe for concurrent calls, so
        # they are serialised here, which also makes sharing its sqlite connection between
        # threads safe where sqlite would refuse it by default.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.local else contextlib.nullcontext()
        )
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
        if path is None:
            self.client = QdrantClient(url=url, timeout=max(1, math.ceil(timeout)), api_key=api_key)
        elif engine == "edge":
            from streams.edge_client import EdgeClient

            if str(path) == MEMORY:
                raise ValueError("the edge engine needs a directory, not :memory:")
            self.client = EdgeClient(path)  # type: ignore[assignment]
        elif engine == "local-process":
            from streams.qdrant_process import ProcessClient

            if str(path) != MEMORY:
                Path(path).mkdir(parents=True, exist_ok=True)
            self.client = ProcessClient(path)  # type: ignore[assignment]
        elif str(path) == MEMORY:
            self.client = QdrantClient(location=MEMORY, force_disable_check_same_thread=True)
        else:
            Path(path).mkdir(parents=True, exist_ok=True)
            self.client = QdrantClient(path=str(path), force_disable_check_same_thread=True)
        self.target = url if url is not None else str(path)
        self.engine = "server" if url is not None else engine

    @classmethod
    def memory(cls, dim: int) -> QdrantSink:
        """Local mode in memory, for tests."""
        return cls(dim, path=MEMORY)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, target={self.target!r})"

    def __enter__(self) -> QdrantSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- collections ---------------------------------------------------------------------

    def _wanted(self, collection: str) -> dict[str, tuple[int, str]]:
        names = USER_VECTORS if collection == USERS else (ITEM_VECTOR,)
        return {name: (self.dim, models.Distance.COSINE.value) for name in names}

    def _existing(self, collection: str) -> dict[str, tuple[int, str]]:
        vectors = self.client.get_collection(collection).config.params.vectors
        if vectors is None:
            return {}
        if isinstance(vectors, models.VectorParams):  # a single unnamed vector
            vectors = {"": vectors}
        return {name: (p.size, models.Distance(p.distance).value) for name, p in vectors.items()}

    def _check(self, collection: str) -> None:
        have, want = self._existing(collection), self._wanted(collection)
        if have != want:

            def show(v: Mapping[str, tuple[int, str]]) -> str:
                return ", ".join(f"{n or '<unnamed>'}: {s} {d}" for n, (s, d) in sorted(v.items()))

            raise CollectionMismatchError(
                f"Qdrant collection {collection!r} at {self.target} has vectors {{{show(have)}}}"
                f" but this service needs {{{show(want)}}}. It was left untouched: point the"
                " service at another store, or delete the collection to rebuild it."
            )

    def ensure_collections(self) -> None:
        """Create `users` and `items` if missing; check them if present (never recreate)."""
        with self._lock:
            for collection in (USERS, ITEMS):
                if self.client.collection_exists(collection):
                    self._check(collection)
                    continue
                config = {
                    name: models.VectorParams(size=size, distance=models.Distance(distance))
                    for name, (size, distance) in self._wanted(collection).items()
                }
                try:
                    self.client.create_collection(collection, vectors_config=config)
                except Exception:
                    # another worker may have created it in between: then check theirs
                    if not self.client.collection_exists(collection):
                        raise
                    self._check(collection)
            if not self.local:  # local mode has no payload indexes (it warns if asked)
                self._ensure_indexes()
            else:
                self._tune_local_storage()

    def _tune_local_storage(self) -> None:
        if self.engine == "local-process":
            self.client.tune_local_storage()  # type: ignore[attr-defined]
        else:
            tune_local_storage(self.client)

    def _ensure_indexes(self) -> None:
        for collection, key in _INDEXES:
            if key in (self.client.get_collection(collection).payload_schema or {}):
                continue
            try:
                self.client.create_payload_index(
                    collection, key, field_schema=models.PayloadSchemaType.KEYWORD, wait=True
                )
            except Exception as exc:  # filters still work without it, only slower
                log.warning("no payload index on %s.%s: %s", collection, key, exc)

    # -- writes and reads ----------------------------------------------------------------

    def user_struct(self, point: UserPoint) -> models.PointStruct:
        """The checked point as qdrant-client takes it; ValueError when it is not valid."""
        return _user_struct(point, self.dim, self.local)

    def upsert_users(self, points: Sequence[UserPoint]) -> None:
        """One batched upsert (wait=True); for a user given twice the last point wins."""
        self.upsert_user_structs(list({p.user_id: self.user_struct(p) for p in points}.values()))

    def upsert_user_structs(self, structs: Sequence[models.PointStruct]) -> None:
        if structs:
            with self._lock:
                self.client.upsert(USERS, points=list(structs), wait=True)

    def upsert_user_records(self, points: Sequence[RecordPoint], params: Any) -> list[str]:
        """Build the points of queued records (`params`: their StateParams) and upsert them
        in one call; with the local-process engine both happen in its child process.
        Returns the users whose point could not be built (logged and skipped: a bug)."""
        if not points:
            return []
        if self.engine == "local-process":
            with self._lock:
                return self.client.upsert_user_records(  # type: ignore[attr-defined, no-any-return]
                    USERS, list(points), params, self.dim
                )
        structs, failed = build_user_structs(points, params, self.dim, self.local)
        self.upsert_user_structs(structs)
        return failed

    def delete_users(self, user_ids: Iterable[str]) -> None:
        """Delete users' points in one call; unknown users are fine."""
        ids = list(dict.fromkeys(user_point_id(u) for u in user_ids))
        if ids:
            with self._lock:
                self.client.delete(
                    USERS, points_selector=models.PointIdsList(points=ids), wait=True
                )

    def upsert_items(self, points: Sequence[ItemPoint]) -> None:
        """One batched upsert of items; an item without a direction is stored without vector."""
        structs = {p.item_id: _item_struct(p, self.dim, self.local) for p in points}
        if structs:
            with self._lock:
                self.client.upsert(ITEMS, points=list(structs.values()), wait=True)

    def _retrieve(
        self, collection: str, ids: Iterable[str], to_point: Callable[[str], str], vectors: bool
    ) -> list[tuple[str, models.Record]]:
        by_point = {to_point(i): i for i in ids}
        if not by_point:
            return []
        with self._lock:
            records = self.client.retrieve(
                collection, ids=list(by_point), with_payload=True, with_vectors=vectors
            )
        return [(by_point[str(r.id)], r) for r in records]

    def get_items(self, item_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Payloads of the items found, by item_id (one call, no vectors)."""
        found = self._retrieve(ITEMS, item_ids, item_point_id, vectors=False)
        return {item_id: dict(r.payload or {}) for item_id, r in found}

    def get_item_vectors(
        self, item_ids: Iterable[str]
    ) -> dict[str, tuple[dict[str, Any], np.ndarray]]:
        """(payload without the cached text vectors, item vector) of the items found."""
        out = {}
        for item_id, r in self._retrieve(ITEMS, item_ids, item_point_id, vectors=True):
            vectors = r.vector if isinstance(r.vector, dict) else {}
            if ITEM_VECTOR in vectors:
                payload = {k: v for k, v in (r.payload or {}).items() if k != "text"}
                out[item_id] = (payload, np.asarray(vectors[ITEM_VECTOR], dtype=np.float32))
        return out

    def get_users(
        self, user_ids: Iterable[str], with_vectors: bool = True
    ) -> dict[str, tuple[dict[str, list[float]], dict[str, Any]]]:
        """(vectors, payload) of the users found, by user_id; stored vectors are unit length."""
        found = self._retrieve(USERS, user_ids, user_point_id, vectors=with_vectors)
        out: dict[str, tuple[dict[str, list[float]], dict[str, Any]]] = {}
        for user_id, r in found:
            vectors = r.vector if isinstance(r.vector, dict) else {}
            out[user_id] = ({k: list(v) for k, v in vectors.items()}, dict(r.payload or {}))
        return out

    def nearest_items(
        self, vector: Any, k: int = 10, exclude: Iterable[str] = ()
    ) -> list[tuple[str, float, dict[str, Any]]]:
        """(item_id, cosine, payload) of the k items nearest to `vector`, `exclude`d ids left
        out; one query. The payload's cached text vectors are not returned."""
        a = _vector(vector, self.dim, "query")
        if a is None:
            return []
        skip = [item_point_id(i) for i in exclude]
        flt = models.Filter(must_not=[models.HasIdCondition(has_id=skip)]) if skip else None
        with self._lock:
            res = self.client.query_points(
                ITEMS,
                query=a.tolist(),
                using=ITEM_VECTOR,
                limit=k,
                query_filter=flt,
                with_payload=models.PayloadSelectorExclude(exclude=["text"]),
            )
        hits = [(r.payload or {}, r.score) for r in res.points]
        return [(str(payload.get("item_id")), score, payload) for payload, score in hits]

    def recommend_items(
        self,
        vector: Any,
        k: int = 10,
        *,
        exclude: Iterable[str] = (),
        tags: Sequence[str] = (),
        negative: Any = None,
        prefetch: Sequence[Any] = (),
    ) -> list[tuple[str, float, dict[str, Any], np.ndarray | None]]:
        """One query for (item_id, score, payload, item vector) of the k best items.

        `vector` alone: nearest by cosine. With `negative`: Qdrant's recommend (average
        vector strategy: towards `vector`, away from `negative`). With `prefetch` (several
        query vectors): each retrieves candidates, fused by reciprocal rank (RRF). Items in
        `exclude` are left out; `tags` keeps items carrying any of them.
        """
        exclude = list(dict.fromkeys(exclude))
        # local mode evaluates a filter in Python for every stored point (~45 ms per 10k
        # items, bench/query.py): there, fetch len(exclude) more and drop them afterwards
        drop_after = self.local and bool(exclude)
        must_not = [models.HasIdCondition(has_id=[item_point_id(i) for i in exclude])]
        must = [models.FieldCondition(key="tags", match=models.MatchAny(any=list(tags)))]
        flt = models.Filter(
            must=must if tags else None,
            must_not=must_not if exclude and not drop_after else None,
        )
        limit = k + len(exclude) if drop_after else k
        kwargs: dict[str, Any] = {"query_filter": flt, "limit": limit, "using": ITEM_VECTOR}
        if prefetch:
            vs = [a for v in prefetch if (a := _vector(v, self.dim, "prefetch")) is not None]
            kwargs["prefetch"] = [
                models.Prefetch(query=a.tolist(), using=ITEM_VECTOR, filter=flt, limit=5 * limit)
                for a in vs
            ]
            kwargs["query"] = models.FusionQuery(fusion=models.Fusion.RRF)
            del kwargs["using"]
        else:
            a = _vector(vector, self.dim, "query")
            if a is None:
                return []
            neg = None if negative is None else _vector(negative, self.dim, "negative")
            kwargs["query"] = (
                a.tolist()
                if neg is None
                else models.RecommendQuery(
                    recommend=models.RecommendInput(
                        positive=[a.tolist()],
                        negative=[neg.tolist()],
                        strategy=models.RecommendStrategy.AVERAGE_VECTOR,
                    )
                )
            )
        with self._lock:
            res = self.client.query_points(
                ITEMS, with_payload=True, with_vectors=[ITEM_VECTOR], **kwargs
            )
        out = []
        skip = set(exclude) if drop_after else set()
        for r in res.points:
            vec = r.vector.get(ITEM_VECTOR) if isinstance(r.vector, dict) else None
            payload = r.payload or {}
            item_id = str(payload.get("item_id"))
            if item_id in skip:
                continue
            item_vec = None if vec is None else np.asarray(vec, dtype=np.float32)
            out.append((item_id, float(r.score), payload, item_vec))
        return out[:k]

    def nearest_users(
        self, vector: Any, k: int = 10, exclude: Iterable[str] = ()
    ) -> list[tuple[str, float]]:
        """(user_id, cosine) of the k users whose fused vector is nearest to `vector`."""
        a = _vector(vector, self.dim, "query")
        if a is None:
            return []
        skip = [user_point_id(u) for u in exclude]
        flt = models.Filter(must_not=[models.HasIdCondition(has_id=skip)]) if skip else None
        with self._lock:
            res = self.client.query_points(
                USERS,
                query=a.tolist(),
                using="fused",
                limit=k,
                query_filter=flt,
                with_payload=["user_id"],
            )
        return [(str((r.payload or {}).get("user_id")), float(r.score)) for r in res.points]

    def count(self, collection: str) -> int:
        with self._lock:
            return self.client.count(collection, exact=True).count

    def close(self) -> None:
        """Release the client (and local mode's directory lock). Idempotent."""
        with self._lock:
            self.client.close()


class _NoCommitBlocks:
    """A sqlite connection whose `with` blocks do not commit (nor roll back): local mode's
    `persist` opens one per point, and the upsert around it commits once instead."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def __enter__(self) -> _NoCommitBlocks:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def _one_commit_per_upsert(collection: Any) -> None:
    """Local mode commits every point of an upsert on its own: ~14 % of an upsert's time
    even without fsync. Here an upsert is one transaction: all its points, or (on an error)
    none; the sink retries a failed upsert whole."""
    if getattr(collection, "_upsert_in_one_transaction", False):
        return  # tuned already
    persistence = collection.storage
    conn = persistence.storage
    upsert = collection.upsert

    def upsert_in_one_transaction(*args: Any, **kwargs: Any) -> Any:
        persistence.storage = _NoCommitBlocks(conn)
        try:
            result = upsert(*args, **kwargs)
        except BaseException:
            conn.rollback()
            raise
        finally:
            persistence.storage = conn
        conn.commit()
        return result

    collection.upsert = upsert_in_one_transaction
    collection._upsert_in_one_transaction = True


def tune_local_storage(client: Any) -> None:
    """Local mode commits one sqlite transaction per point, with an fsync each: half of an
    upsert's time. WAL with synchronous=NORMAL commits without fsync yet survives a killed
    process (an OS crash may lose the last commits: Qdrant is a view the worker rebuilds
    from its table on start), and one commit per upsert instead of per point. Reaches into
    qdrant-client's local storage, so anything unexpected there (or another client) just
    leaves the defaults."""
    try:
        collections = client._client.collections
        stored = [c for c in collections.values() if c.storage is not None]
        conns = [c.storage.storage for c in stored]
    except AttributeError:
        log.debug("qdrant-client local storage not as expected; sqlite left as it is")
        return
    for conn in conns:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    for collection in stored:
        _one_commit_per_upsert(collection)


def build_user_structs(
    points: Sequence[RecordPoint], params: Any, dim: int, local: bool
) -> tuple[list[models.PointStruct], list[str]]:
    """Checked structs of the points built from `points`' records, and the users whose
    point failed to build (logged)."""
    from streams.user_points import point_from_record

    structs, failed = [], []
    for p in points:
        try:
            structs.append(_user_struct(point_from_record(p, params), dim, local))
        except Exception:
            log.exception("building the Qdrant point of user %r failed; skipped", p.user_id)
            failed.append(p.user_id)
    return structs, failed
