"""`interest-stream up`: embedded broker (unless one is given), topics, Qdrant, the worker.

Runs in the foreground; Ctrl-C (or SIGTERM) stops the worker, flushes pending Qdrant
writes, and stops the embedded broker. The embedded broker keeps its log in memory:
stopping `up` loses the events, so the next embedded `up` starts from empty state too.

With the embedded broker, `up` also runs the lag exporter (`streams/lag_exporter.py`) as
a child process on the port after the worker's (6067 by default), so consumer lag is
measured from outside the worker as in the docker-compose stack. With `--broker`, run
`interest-stream lag-exporter` once per consumer group yourself (compose does).
"""

from __future__ import annotations

import logging
import shutil
import sys

from streams.config import Settings
from streams.embedded import BrokerError, EmbeddedBroker, ensure_topics
from streams.gc_tuning import tune_gc
from streams.supervisor import LagExporterProcess

log = logging.getLogger("streams.serve")


def serve(settings: Settings, embedded: bool) -> int:
    from encoders import Encoder
    from streams.sink import CollectionMismatchError, QdrantSink

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    exporter = None
    try:
        if embedded:
            host, _, port = settings.broker.rpartition(":")
            if host not in ("127.0.0.1", "localhost"):
                print("error: the embedded broker listens on 127.0.0.1 only", file=sys.stderr)
                return 2
            broker = EmbeddedBroker(int(port), log_path=settings.data_dir / "broker.log")
            broker.start()
            print(f"embedded broker (Tansu, in-memory log) on {broker.bootstrap}", flush=True)
            _forget_previous_run(settings)
        ensure_topics(settings.broker, settings.partitions)
        if broker:
            exporter = _start_lag_exporter(settings)
    except (BrokerError, OSError) as err:
        print(f"error: broker {settings.broker}: {err}", file=sys.stderr)
        if broker:
            broker.stop()
        return 1
    try:
        encoder = Encoder(
            settings.model,
            device=settings.device,
            threads=settings.encoder_threads,
            auto_export=True,
        )
        print(
            f"encoder {encoder.spec.name} ({encoder.precision}) on {encoder.provider}", flush=True
        )
        if settings.qdrant_url:
            key = settings.qdrant_api_key
            sink = QdrantSink(
                encoder.dim,
                url=settings.qdrant_url,
                api_key=None if key is None else key.get_secret_value(),
            )
        else:
            sink = QdrantSink(encoder.dim, path=settings.qdrant_path, engine=settings.qdrant_engine)
        try:
            sink.ensure_collections()
        except CollectionMismatchError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"qdrant {settings.qdrant_url or settings.qdrant_path} ({sink.engine})", flush=True)
        return _run_worker(settings, encoder, sink)
    finally:
        if exporter:
            exporter.stop()
        if broker:
            broker.stop()


def _start_lag_exporter(settings: Settings) -> LagExporterProcess | None:
    """The lag exporter next to the worker (port + 1); `up` goes on without it if that
    port is taken."""
    if not 0 < settings.web_port < 65535:
        return None
    exporter = LagExporterProcess(
        settings.broker,
        settings.app_id,
        settings.data_dir / "lag-exporter.log",
        host=settings.web_host,
        port=settings.web_port + 1,
    )
    try:
        exporter.start(timeout=30)
    except (RuntimeError, TimeoutError) as err:
        exporter.stop()
        log.warning("lag exporter not started: %s", err)
        return None
    print(f"lag exporter on {exporter.url}/metrics", flush=True)
    return exporter


def _forget_previous_run(settings: Settings) -> None:
    """State from an earlier run belongs to a log the in-memory broker no longer has: its
    offsets would make the new log's first events look like replays. Start clean."""
    stale = [d for d in (settings.table_dir, settings.qdrant_path) if d.exists()]
    for d in stale:
        shutil.rmtree(d)
    if stale:
        print(
            "the embedded broker starts with an empty log, so the previous run's state was"
            f" cleared ({', '.join(str(d) for d in stale)}); use --broker for a durable Kafka",
            flush=True,
        )


def _run_worker(settings: Settings, encoder: object, sink: object) -> int:
    import faust

    from streams.app import create_app

    app = create_app(settings, encoder, sink)  # type: ignore[arg-type]
    tune_gc()  # started up: what is alive now stays (streams/gc_tuning.py)
    print(f"worker web server on {settings.web_url}", flush=True)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as stop:
        return int(stop.code or 0) if isinstance(stop.code, int | None) else 1
    finally:
        sink.close()  # type: ignore[attr-defined]
    return 0
