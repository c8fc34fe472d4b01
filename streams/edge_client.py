"""Qdrant Edge (`qdrant-edge-py`: Qdrant's Rust engine, embedded in-process) behind the few
`QdrantClient` calls `QdrantSink` makes, so the sink's checks and the worker stay as they are.

One Edge shard per collection, in `<path>/<collection>/`, with the vector configuration
kept beside it in `<collection>.json` (checked against what the service needs on start,
like a server collection). Compared with qdrant-client's local mode (numpy brute force and
a sqlite row per point) it writes and searches natively: bench/query.py and
bench/pipeline.py measure both. Not thread-safe; `QdrantSink` serialises calls.

Qdrant's `average_vector` recommend query is a nearest search for 2·p − n (what the server
does internally), and RRF fusion uses Qdrant's constant k = 2.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import models

RRF_K = 2  # Qdrant's reciprocal-rank-fusion constant


def import_edge() -> Any:
    try:
        import qdrant_edge
    except ImportError as exc:  # pragma: no cover - the cpu/gpu extras install it
        raise RuntimeError(
            "qdrant engine 'edge' needs the qdrant-edge-py package (pip install qdrant-edge-py)"
        ) from exc
    return qdrant_edge


@dataclass
class _Hit:
    id: str
    score: float
    payload: dict[str, Any] | None
    vector: dict[str, Any] | None


@dataclass
class _Result:
    points: list[_Hit]


@dataclass
class _Count:
    count: int


class _Described:
    """What `get_collection(...)` answers: `.config.params.vectors` and `.payload_schema`."""

    def __init__(self, vectors: dict[str, models.VectorParams]) -> None:
        self.config = type("C", (), {"params": type("P", (), {"vectors": vectors})()})()
        self.payload_schema: dict[str, Any] = {}


class EdgeClient:
    """The subset of `QdrantClient` used by `QdrantSink`, over Qdrant Edge shards."""

    def __init__(self, path: str | Path) -> None:
        self.qe = import_edge()
        self.root = Path(path)
        self.root.mkdir(parents=True, exist_ok=True)
        self.shards: dict[str, Any] = {}

    # -- collections ---------------------------------------------------------------------

    def _meta(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def collection_exists(self, name: str) -> bool:
        return self._meta(name).is_file() and (self.root / name).is_dir()

    def create_collection(self, name: str, vectors_config: dict[str, models.VectorParams]) -> None:
        qe = self.qe
        if (self.root / name).exists():  # a half-created shard from a crash: start over
            shutil.rmtree(self.root / name)
        params = {
            n: qe.EdgeVectorParams(size=p.size, distance=qe.Distance.Cosine)
            for n, p in vectors_config.items()
        }
        self.shards[name] = qe.EdgeShard.create(
            str(self.root / name), qe.EdgeConfig(vectors=params)
        )
        meta = {n: {"size": p.size, "distance": "Cosine"} for n, p in vectors_config.items()}
        tmp = self._meta(name).with_suffix(".tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(self._meta(name))

    def get_collection(self, name: str) -> _Described:
        meta = json.loads(self._meta(name).read_text())
        vectors = {
            n: models.VectorParams(size=v["size"], distance=models.Distance(v["distance"]))
            for n, v in meta.items()
        }
        return _Described(vectors)

    def _shard(self, name: str) -> Any:
        if name not in self.shards:
            if not self.collection_exists(name):
                raise ValueError(f"Collection {name} not found")
            self.shards[name] = self.qe.EdgeShard.load(str(self.root / name))
        return self.shards[name]

    # -- writes ----------------------------------------------------------------------------

    def upsert(
        self, collection: str, points: Sequence[models.PointStruct], wait: bool = True
    ) -> None:
        qe = self.qe
        batch = [
            qe.Point(
                str(p.id),
                {n: np.asarray(v, dtype=np.float32) for n, v in (p.vector or {}).items()},
                p.payload or {},
            )
            for p in points
        ]
        if batch:
            self._shard(collection).update(qe.UpdateOperation.upsert_points(batch))

    def delete(
        self, collection: str, points_selector: models.PointIdsList, wait: bool = True
    ) -> None:
        ids = [str(i) for i in points_selector.points]
        if ids:
            self._shard(collection).update(self.qe.UpdateOperation.delete_points(ids))

    # -- reads -----------------------------------------------------------------------------

    def retrieve(
        self,
        collection: str,
        ids: Iterable[str],
        with_payload: bool = True,
        with_vectors: bool | list[str] = False,
    ) -> list[_Hit]:
        records = self._shard(collection).retrieve(
            [str(i) for i in ids], with_payload=with_payload, with_vector=with_vectors
        )
        return [_Hit(str(r.id), 0.0, r.payload, r.vector) for r in records]

    def query_points(
        self,
        collection: str,
        query: Any = None,
        using: str | None = None,
        limit: int = 10,
        query_filter: models.Filter | None = None,
        with_payload: Any = True,
        with_vectors: bool | list[str] = False,
        prefetch: Sequence[models.Prefetch] | None = None,
    ) -> _Result:
        qe = self.qe
        request = qe.QueryRequest(
            limit=limit,
            query=self._query(query, using),
            prefetches=[
                qe.Prefetch(
                    limit=p.limit,
                    query=self._query(p.query, p.using),
                    filter=self._filter(p.filter),
                )
                for p in prefetch or ()
            ]
            or None,
            filter=self._filter(query_filter),
            with_payload=with_payload is not False,
            with_vector=with_vectors,
        )
        drop = _excluded_keys(with_payload)
        points = []
        for r in self._shard(collection).query(request):
            payload = r.payload
            if payload is not None and drop:
                payload = {k: v for k, v in payload.items() if k not in drop}
            if payload is not None and isinstance(with_payload, list):
                payload = {k: v for k, v in payload.items() if k in with_payload}
            points.append(_Hit(str(r.id), float(r.score), payload, r.vector))
        return _Result(points)

    def _query(self, query: Any, using: str | None) -> Any:
        qe = self.qe
        if isinstance(query, models.FusionQuery):
            return qe.Fusion.Rrf(k=RRF_K)
        if isinstance(query, models.RecommendQuery):
            rec = query.recommend
            if rec.strategy not in (None, models.RecommendStrategy.AVERAGE_VECTOR):
                raise ValueError(f"recommend strategy {rec.strategy} not supported on edge")
            pos = np.mean([np.asarray(v, np.float64) for v in rec.positive or []], axis=0)
            vec = 2 * pos - np.mean([np.asarray(v, np.float64) for v in rec.negative], axis=0)
            return qe.Query.Nearest(vec.astype(np.float32).tolist(), using=using)
        if query is None:
            return None
        return qe.Query.Nearest(np.asarray(query, dtype=np.float32).tolist(), using=using)

    def _filter(self, flt: models.Filter | None) -> Any:
        if flt is None:
            return None
        qe = self.qe

        def conditions(conds: Any) -> list[Any] | None:
            if not conds:
                return None
            out = []
            for c in conds if isinstance(conds, list) else [conds]:
                if isinstance(c, models.HasIdCondition):
                    out.append(qe.HasIdCondition({str(i) for i in c.has_id}))
                elif isinstance(c, models.FieldCondition) and isinstance(c.match, models.MatchAny):
                    out.append(qe.FieldCondition(c.key, match=qe.MatchAny(list(c.match.any))))
                else:
                    raise ValueError(f"filter condition {type(c).__name__} not supported on edge")
            return out

        return qe.Filter(must=conditions(flt.must), must_not=conditions(flt.must_not))

    def count(self, collection: str, exact: bool = True) -> _Count:
        return _Count(int(self._shard(collection).count(self.qe.CountRequest(exact=exact))))

    def close(self) -> None:
        for shard in self.shards.values():
            shard.flush()
            shard.close()
        self.shards.clear()


def _excluded_keys(with_payload: Any) -> set[str]:
    if isinstance(with_payload, models.PayloadSelectorExclude):
        return set(with_payload.exclude)
    return set()
