"""qdrant-client local mode in a child process, behind the `QdrantClient` calls `QdrantSink`
makes: the `local-process` embedded engine.

Local mode is Python over numpy and sqlite: upserting a user point costs ~0.3 ms of CPU,
mostly holding the GIL, so in the worker's process Qdrant writes take a large share of the
one core the stream runs on (bench/RESULTS.md, "Pipeline"). Here the same local mode, on
the same directory, runs in a child process (multiprocessing "spawn": safe with threads in
the parent) that serves method calls over a pipe, so those writes run on another core. The
parent only pickles the calls (~0.02 ms a user point): an upsert ships the vectors of all
its points as one float32 matrix, and the child rebuilds the points (pickling point by
point costs twice as much; numbers in `_columns`).

The child holds local mode's directory lock while it runs; it exits on `close()`, when the
parent process dies, or when the pipe closes. A call to a dead child raises
`QdrantProcessDied` (a ConnectionError: `SyncQueue` retries it as an outage) and the next
call starts a new child. An exception raised in the child is raised again in the parent,
with the child's traceback as a note.

>>> client = ProcessClient(":memory:")
>>> client.collection_exists("users")
False
>>> try:
...     client.count("users")  # an exception in the child is raised here
... except ValueError as exc:
...     print(exc)
Collection users not found
>>> client.close()
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import models

log = logging.getLogger(__name__)

MEMORY = ":memory:"
_CONTEXT = "spawn"  # a fresh interpreter: forking a process with threads is unsafe
_CHECK_S = 1.0  # how often a side waiting for the other checks that the other is alive
_CLOSE_TIMEOUT_S = 10.0
# a call unanswered this long means a hung child (stopped, deadlocked): it is killed and
# the call fails like a dead child's. Local mode answers in well under a second here (an
# upsert of 256 user points ~0.25 s), so this only trips when something is wrong.
CALL_TIMEOUT_S = 120.0
_UPSERT_COLUMNS = "upsert_columns"  # see `_columns`
_TUNE = "tune_local_storage"
_UPSERT_RECORDS = "upsert_user_records"
# the QdrantClient methods the child serves (what QdrantSink calls, and a few more)
_CALLS = frozenset(
    {
        "collection_exists",
        "count",
        "create_collection",
        "create_payload_index",
        "delete",
        "delete_collection",
        "get_collection",
        "get_collections",
        "query_points",
        "retrieve",
        "scroll",
        "upsert",
    }
)

__all__ = ["ProcessClient", "QdrantProcessDied", "RemoteError"]


class QdrantProcessDied(ConnectionError):
    """The child process running local mode is gone (killed, crashed); the call's outcome is
    unknown. The next call starts a new child."""


class _Hung(Exception):
    """The child did not answer within the call timeout."""


class RemoteError(RuntimeError):
    """An exception in the child that could not be sent back as it was (not picklable)."""


class _Remote(Exception):
    """Carries an exception raised in the child out of the transport's error handling."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


# -- the child -------------------------------------------------------------------------------


def _portable(exc: BaseException) -> tuple[bool, BaseException, str]:
    """The reply for an exception: (False, it or a RemoteError with its message when it
    does not pickle, the child's traceback)."""
    tb = "".join(traceback.format_exception(exc))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False, RemoteError(f"{type(exc).__name__}: {exc}"), tb
    exc.__traceback__ = exc.__cause__ = exc.__context__ = None
    return False, exc, tb


def _open(path: str) -> Any:
    from qdrant_client import QdrantClient

    if path == MEMORY:
        return QdrantClient(location=MEMORY)
    return QdrantClient(path=path, force_disable_check_same_thread=True)


def _upsert_columns(
    client: Any,
    collection: str,
    ids: list[Any],
    names: list[tuple[str, ...]],
    payloads: list[Any],
    matrix: np.ndarray,
    **kwargs: Any,
) -> Any:
    points, rows = [], iter(matrix)
    for point_id, point_names, payload in zip(ids, names, payloads, strict=True):
        vector = {name: next(rows) for name in point_names}
        points.append(
            models.PointStruct.model_construct(id=point_id, vector=vector, payload=payload)
        )
    return client.upsert(collection, points=points, **kwargs)


def _upsert_user_records(
    client: Any, collection: str, points: list[Any], params: Any, dim: int
) -> list[str]:
    """`QdrantSink.upsert_user_records` on this side: points built here, off the parent's
    core; returns the users whose point did not build."""
    from streams.sink import build_user_structs

    structs, failed = build_user_structs(points, params, dim, local=True)
    if structs:
        client.upsert(collection, points=structs, wait=True)
    return failed


def _handler(client: Any, method: str) -> Callable[..., Any]:
    if method == _UPSERT_RECORDS:
        return lambda *args: _upsert_user_records(client, *args)
    if method == _UPSERT_COLUMNS:
        return lambda *args, **kwargs: _upsert_columns(client, *args, **kwargs)
    if method == _TUNE:
        from streams.sink import tune_local_storage

        return lambda: tune_local_storage(client)
    if method not in _CALLS:
        raise AttributeError(f"the qdrant process does not serve {method!r}")
    return getattr(client, method)  # type: ignore[no-any-return]


def _serve(conn: Connection, path: str, parent_pid: int, tune: bool) -> None:
    """The child's main loop: open local mode, then answer each (method, args, kwargs) with
    (ok, result or exception, traceback) until told to close, or orphaned."""
    # Ctrl-C reaches the whole process group: the parent decides when this process stops
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        client = _open(path)
        if tune:
            _handler(client, _TUNE)()
        from streams.gc_tuning import tune_gc

        tune_gc()  # a write of 256 points allocates ~10^5 objects (streams/gc_tuning.py)
    except BaseException as exc:
        conn.send(_portable(exc))
        return
    conn.send((True, None, ""))
    try:
        while True:
            if not conn.poll(_CHECK_S):  # a call or EOF wakes it up at once
                if os.getppid() != parent_pid:
                    return  # orphaned: the parent died and someone else holds its end
                continue
            try:
                method, args, kwargs = conn.recv()
            except EOFError:
                return  # the parent is gone, or closed its end
            if method == "close":
                client.close()
                conn.send((True, None, ""))
                return
            try:
                reply = (True, _handler(client, method)(*args, **kwargs), "")
            except Exception as exc:
                reply = _portable(exc)
            try:
                conn.send(reply)
            except Exception as exc:  # a result that does not pickle (sent nothing)
                conn.send(_portable(exc))
    finally:
        with contextlib.suppress(Exception):
            client.close()


# -- the parent ------------------------------------------------------------------------------


def _columns(points: Any) -> tuple[list[Any], list[tuple[str, ...]], list[Any], np.ndarray] | None:
    """(ids, vector names per point, payloads, all vectors as one float32 matrix) of
    `PointStruct`s whose vectors are named float32 arrays of one length (what `QdrantSink`
    builds for local mode); None for anything else, which is sent as it is.

    Pickling 100 user points (5 x 384 float32 + payload) costs ~25 us a point as PointStructs
    or as plain tuples (the five arrays dominate), ~12 us as columns (2-core EPYC).
    """
    if not isinstance(points, list | tuple):
        return None
    ids, names, payloads, rows = [], [], [], []
    for p in points:
        if not isinstance(p, models.PointStruct) or not isinstance(p.vector, dict):
            return None
        for a in p.vector.values():
            if not isinstance(a, np.ndarray) or a.dtype != np.float32 or a.ndim != 1:
                return None
            rows.append(a)
        ids.append(p.id)
        names.append(tuple(p.vector))
        payloads.append(p.payload)
    if not rows or len({a.shape for a in rows}) != 1:
        return None
    return ids, names, payloads, np.stack(rows)


def _remote(method: str) -> Callable[..., Any]:
    def call(self: ProcessClient, *args: Any, **kwargs: Any) -> Any:
        return self._call(method, args, kwargs)

    call.__name__ = method
    call.__doc__ = f"`QdrantClient.{method}`, run in the child process."
    return call


class ProcessClient:
    """The `QdrantClient` calls of `QdrantSink` (and `tune_local_storage`), served by local
    mode (`path`: a directory, or ":memory:") in a child process. Thread-safe: calls are
    serialised, as local mode needs."""

    def __init__(self, path: str | Path, call_timeout: float = CALL_TIMEOUT_S) -> None:
        self.path = str(path)
        self.call_timeout = call_timeout
        self._tune = False  # once asked, every later child is tuned too (per connection)
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._proc: Any = None
        self._closed = False
        self._start()

    def __repr__(self) -> str:
        pid = None if self._proc is None else self._proc.pid
        return f"{type(self).__name__}({self.path!r}, pid={pid})"

    def _reply(self) -> Any:
        """The child's answer: its result, or its exception (as `_Remote`). EOFError or
        OSError: the child is gone."""
        assert self._conn is not None
        deadline = time.monotonic() + self.call_timeout
        while not self._conn.poll(_CHECK_S):
            if not self._proc.is_alive():
                raise EOFError
            if time.monotonic() > deadline:
                raise _Hung
        ok, value, tb = self._conn.recv()
        if ok:
            return value
        if tb:
            value.add_note(f"raised in the qdrant local-mode process:\n{tb}")
        raise _Remote(value)

    def _start(self) -> None:
        ctx = multiprocessing.get_context(_CONTEXT)
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_serve,
            args=(child, self.path, os.getpid(), self._tune),
            name="qdrant-local",
            daemon=True,  # terminated at the parent's exit if still running
        )
        proc.start()
        child.close()  # the child's end lives in the child only: its death is EOF here
        self._conn, self._proc = parent, proc
        try:
            self._reply()  # opened, or the reason why not (the directory is locked, ...)
        except _Remote as remote:
            self._stop(kill=True)
            raise remote.exc from None
        except (EOFError, OSError, _Hung) as exc:
            code = self._stop(kill=True)
            raise QdrantProcessDied(
                f"the qdrant local-mode process died or hung while opening {self.path}"
                f" (exit code {code})"
            ) from exc

    def _call(self, method: str, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            if self._conn is None:
                log.warning("starting a new qdrant local-mode process (the last one died)")
                self._start()
            assert self._conn is not None
            pid = self._proc.pid
            try:
                self._conn.send((method, tuple(args), kwargs))
                return self._reply()
            except _Remote as remote:
                raise remote.exc from None
            except (EOFError, OSError) as exc:
                code = self._stop(kill=True)
                raise QdrantProcessDied(
                    f"the qdrant local-mode process (pid {pid}) died during {method}"
                    f" (exit code {code}); the next call starts a new one"
                ) from exc
            except _Hung:
                self._stop(kill=True)
                raise QdrantProcessDied(
                    f"the qdrant local-mode process (pid {pid}) did not answer {method} within"
                    f" {self.call_timeout:g} s and was killed; the next call starts a new one"
                ) from None
            except Exception:
                raise  # e.g. an argument that does not pickle: nothing was sent
            except BaseException:  # interrupted mid-call (Ctrl-C): the pipe is out of step
                self._stop(kill=True)
                raise

    def _stop(self, kill: bool) -> int | None:
        """End the child (SIGKILL at once with `kill`, else after a grace period); its exit
        code."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is None:
            return None
        if kill:
            proc.kill()
        proc.join(_CLOSE_TIMEOUT_S)
        if proc.is_alive():
            proc.kill()
            proc.join()
        return proc.exitcode  # type: ignore[no-any-return]

    @property
    def pid(self) -> int | None:
        """The child's process id (None between a death and the next call)."""
        return None if self._proc is None else self._proc.pid  # type: ignore[no-any-return]

    # -- QdrantClient's calls ------------------------------------------------------------

    collection_exists = _remote("collection_exists")
    count = _remote("count")
    create_collection = _remote("create_collection")
    create_payload_index = _remote("create_payload_index")
    delete = _remote("delete")
    delete_collection = _remote("delete_collection")
    get_collection = _remote("get_collection")
    get_collections = _remote("get_collections")
    query_points = _remote("query_points")
    retrieve = _remote("retrieve")
    scroll = _remote("scroll")

    def upsert(self, collection_name: str, points: Any, **kwargs: Any) -> Any:
        """`QdrantClient.upsert`; the vectors of `PointStruct`s travel as one matrix."""
        cols = _columns(points)
        if cols is None:
            return self._call("upsert", (collection_name,), {"points": points, **kwargs})
        return self._call(_UPSERT_COLUMNS, (collection_name, *cols), kwargs)

    def upsert_user_records(
        self, collection_name: str, points: list[Any], params: Any, dim: int
    ) -> list[str]:
        """Build user points from their record bytes (`streams.sink.RecordPoint`) in the
        child and upsert them there; returns the users whose point did not build."""
        return self._call(_UPSERT_RECORDS, (collection_name, points, params, dim), {})  # type: ignore[no-any-return]

    def tune_local_storage(self) -> None:
        """`streams.sink.tune_local_storage` in the child, and in every later one."""
        self._tune = True
        self._call(_TUNE, (), {})

    def close(self) -> None:
        """Close local mode and end the child (releasing the directory lock). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._conn is None:
                return
            try:
                self._conn.send(("close", (), {}))
                if self._conn.poll(_CLOSE_TIMEOUT_S):
                    self._conn.recv()
            except (EOFError, OSError):
                pass  # already gone: nothing left to close
            self._stop(kill=False)
