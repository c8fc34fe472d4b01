"""Prometheus metrics of one worker, served at `/metrics` (prometheus-client).

Names follow Prometheus conventions: a unit suffix, `_total` on counters, and labels of
bounded cardinality only (topic, error class, provider; never a user or item id). Each
worker has its own registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

from collections import Counter as CounterOf
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from streams.embedded import INPUT_TOPICS

CONTENT_TYPE = CONTENT_TYPE_LATEST
# the `error` values streams/worker.py gives dead letters
ERROR_CLASSES = ("InvalidEvent", "KeyMismatch", "EncodeError", "ItemNotFound")

# seconds: from a fast micro-batch to a Qdrant outage
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_FRESHNESS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.consumed = Counter(
            "interest_events_consumed_total",
            "Messages read from input topics",
            ["topic"],
            registry=r,
        )
        self.applied = Counter(
            "interest_events_applied_total",
            "Events applied to user state",
            ["topic"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "interest_events_dead_lettered_total",
            "Messages sent to events.dlq, by error class",
            ["error"],
            registry=r,
        )
        self.skipped = Counter(
            "interest_events_skipped_total",
            "Messages recognised as replays or duplicates, or erased by a deletion",
            ["reason"],
            registry=r,
        )
        self.batch_size = Histogram(
            "interest_batch_size_events",
            "Messages per micro-batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10_000),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "interest_batch_duration_seconds",
            "Time to process one micro-batch (validate, encode, apply, write the table)",
            buckets=_LATENCY,
            registry=r,
        )
        self.texts = Counter(
            "interest_user_texts_total",
            "Distinct user texts per batch: encoded, or found in the text cache",
            ["source"],
            registry=r,
        )
        self.users_updated = Counter(
            "interest_users_updated_total", "User states changed by applied events", registry=r
        )
        self.upsert_seconds = Histogram(
            "interest_qdrant_upsert_duration_seconds",
            "One batched Qdrant write of user points",
            buckets=_LATENCY,
            registry=r,
        )
        self.upsert_errors = Counter(
            "interest_qdrant_upsert_errors_total", "Failed Qdrant writes (retried)", registry=r
        )
        self.qdrant_pending = Gauge(
            "interest_qdrant_pending_points", "User points waiting to be written", registry=r
        )
        self.freshness = Histogram(
            "interest_freshness_seconds",
            "Publish time (Kafka timestamp) of a user's newest event to its vector in Qdrant",
            buckets=_FRESHNESS,
            registry=r,
        )
        self.parked_users = Gauge(
            "interest_parked_users", "Users with clicks waiting for their item", registry=r
        )

        self.lag_messages = Gauge(
            "interest_consumer_lag_messages",
            "Log end offset (high watermark) minus the next offset to process",
            ["topic", "partition"],
            registry=r,
        )
        self.lag_seconds = Gauge(
            "interest_consumer_lag_seconds",
            "While behind: seconds since the publish time of the last processed message",
            ["topic", "partition"],
            registry=r,
        )
        self._failures_seen = 0
        # series exist from the start (at 0), so rate() sees their first increase
        for topic in INPUT_TOPICS:
            self.consumed.labels(topic)
            self.applied.labels(topic)
        for error in ERROR_CLASSES:
            self.dead_lettered.labels(error)
        for reason in ("duplicates", "erased"):
            self.skipped.labels(reason)
        for source in ("encoded", "cached"):
            self.texts.labels(source)

    def observe_lag(self, lag: dict[tuple[str, int], tuple[int, float]]) -> None:
        """(topic, partition) -> (messages behind, seconds behind) for the assigned ones."""
        self.lag_messages.clear()
        self.lag_seconds.clear()
        for (topic, partition), (messages, seconds) in lag.items():
            self.lag_messages.labels(topic, str(partition)).set(messages)
            self.lag_seconds.labels(topic, str(partition)).set(seconds)

    def observe_batch(self, topics: list[str], res: Any, seconds: float) -> None:
        """One processed micro-batch (`res`: a streams.worker.BatchResult)."""
        self.batch_size.observe(len(topics))
        self.batch_seconds.observe(seconds)
        for topic, n in CounterOf(topics).items():
            self.consumed.labels(topic).inc(n)
        self.observe_result(res)

    def observe_result(self, res: Any) -> None:
        for topic, n in res.applied_topics.items():
            self.applied.labels(topic).inc(n)
        for dl in res.dead_letters:
            self.dead_lettered.labels(dl.error).inc()
        for reason in ("duplicates", "erased"):
            if res.counts.get(reason):
                self.skipped.labels(reason).inc(res.counts[reason])
        self.users_updated.inc(len(res.updated))
        for source, n in res.texts.items():
            self.texts.labels(source).inc(n)

    def observe_flush(self, published: list[float], visible_at: float, seconds: float) -> None:
        self.upsert_seconds.observe(seconds)
        for t in published:
            self.freshness.observe(max(0.0, visible_at - t))

    def render(self, pending: int, parked: int, failures: int) -> bytes:
        self.qdrant_pending.set(pending)
        self.parked_users.set(parked)
        if failures > self._failures_seen:  # the queue counts; the counter follows
            self.upsert_errors.inc(failures - self._failures_seen)
            self._failures_seen = failures
        return generate_latest(self.registry)
