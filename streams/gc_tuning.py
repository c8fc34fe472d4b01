"""Garbage-collector settings for the worker's processes (the worker, its Qdrant process).

A micro-batch allocates hundreds of thousands of short-lived objects (Kafka messages,
records, dicts, numpy views, Faust's futures for the changelog), so with CPython's default
thresholds (700, 10, 10) the collector ran many times per batch, and every hundredth run
was a full one that walks every object of the process: Faust, aiokafka, qdrant-client's
models, ONNX Runtime's Python side. py-spy put that time on whatever line allocated.

Here young objects are collected every 100,000 net allocations instead of 700, and
`gc.freeze()` moves what is alive after startup (modules, the app, the encoder) out of the
collector's sight, so the rarer full passes walk only what came after. Reference cycles
are still collected, in fewer, larger passes.

bench/pipeline.py, 40,000 click events, A/B twice on the 2-core machine: consumed
5,427 / 5,513 -> 6,607 / 6,723 events/s, visible in Qdrant 4,078 / 4,026 -> 4,641 / 4,628.
"""

from __future__ import annotations

import gc

THRESHOLDS = (100_000, 50, 100)

__all__ = ["THRESHOLDS", "tune_gc"]


def tune_gc() -> None:
    """Freeze what is alive now and raise the collection thresholds (call once a process
    has started up)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
