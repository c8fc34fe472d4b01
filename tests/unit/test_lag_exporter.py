"""The lag exporter's pure part: lag from offsets and timestamps, and its exposition."""

from __future__ import annotations

import argparse
import math

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.config import Settings
from streams.lag_exporter import (
    DEFAULT_PORT,
    LagCollector,
    PartitionOffsets,
    Snapshot,
    add_arguments,
    kafka_options,
    partition_lag,
)

offsets = st.integers(min_value=0, max_value=10**12)
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)


@given(offsets, st.none() | offsets, offsets, st.none() | times, times)
def test_lag_is_log_end_minus_where_the_group_reads_and_the_age_of_that_message(
    end, committed, start, oldest_ts, now
):
    o = PartitionOffsets("events.click", 3, end, committed, start, oldest_ts)
    lag = partition_lag(o, now)
    position = start if committed is None else committed
    assert lag.messages == max(0, end - position) >= 0
    if lag.messages == 0:
        assert lag.seconds == 0.0  # caught up: no age, whatever the last message's time
    elif oldest_ts is None:
        assert math.isnan(lag.seconds)  # behind, but the message could not be read
    else:
        assert lag.seconds == max(0.0, now - oldest_ts)
    assert (lag.topic, lag.partition, lag.end, lag.committed) == ("events.click", 3, end, committed)


def test_a_group_that_never_committed_reads_from_the_log_start():
    o = PartitionOffsets("items", 0, end=100, committed=None, start=40, oldest_ts=10.0)
    assert o.position == 40
    assert partition_lag(o, now=25.0).messages == 60
    assert partition_lag(o, now=25.0).seconds == 15.0
    # a committed offset wins over the log start, 0 included
    assert PartitionOffsets("items", 0, end=100, committed=0, start=40).position == 0


def exposition(collector: LagCollector) -> list:
    """Every sample, as Prometheus would parse the scrape."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def samples(collector: LagCollector, name: str) -> dict[tuple, float]:
    return {
        tuple(sorted(s.labels.items())): s.value for s in exposition(collector) if s.name == name
    }


def test_the_collector_exposes_the_latest_snapshot_with_group_topic_partition_labels():
    c = LagCollector("interest-stream")
    assert samples(c, "interest_consumergroup_lag_messages") == {}  # nothing read yet
    assert samples(c, "interest_lag_exporter_poll_errors_total") == {
        (("group", "interest-stream"),): 0.0
    }
    lags = (
        partition_lag(PartitionOffsets("events.click", 0, 120, 100, oldest_ts=970.0), 1000.0),
        partition_lag(PartitionOffsets("events.click", 1, 50, 50), 1000.0),
        partition_lag(PartitionOffsets("items", 0, 9, None), 1000.0),  # behind, no timestamp
    )
    c.update(Snapshot("interest-stream", lags, at=1000.0))
    key = (("group", "interest-stream"), ("partition", "0"), ("topic", "events.click"))
    messages = samples(c, "interest_consumergroup_lag_messages")
    assert messages[key] == 20 and len(messages) == 3
    seconds = samples(c, "interest_consumergroup_lag_seconds")
    assert seconds[key] == 30.0
    assert math.isnan(
        seconds[(("group", "interest-stream"), ("partition", "0"), ("topic", "items"))]
    )
    committed = samples(c, "interest_consumergroup_committed_offset")
    assert committed[key] == 100 and len(committed) == 2  # items/0 never committed: absent
    end = samples(c, "interest_partition_log_end_offset")
    assert end[(("partition", "1"), ("topic", "events.click"))] == 50
    assert samples(c, "interest_lag_exporter_last_poll_timestamp_seconds") == {
        (("group", "interest-stream"),): 1000.0
    }
    # labels of bounded cardinality only
    for s in exposition(c):
        assert set(s.labels) <= {"group", "topic", "partition"}, s

    c.failed()  # a failed poll is counted; the last snapshot stays
    assert samples(c, "interest_lag_exporter_poll_errors_total") == {
        (("group", "interest-stream"),): 1.0
    }
    assert samples(c, "interest_consumergroup_lag_messages")[key] == 20


def test_kafka_security_settings_become_aiokafka_options(tmp_path):
    assert kafka_options(Settings()) == {}
    opts = kafka_options(
        Settings(kafka_sasl_mechanism="PLAIN", kafka_sasl_username="svc", kafka_sasl_password="pw")
    )
    assert opts["security_protocol"] == "SASL_PLAINTEXT" and opts["ssl_context"] is None
    assert (opts["sasl_mechanism"], opts["sasl_plain_username"]) == ("PLAIN", "svc")
    assert opts["sasl_plain_password"] == "pw"


def test_command_line_defaults():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    assert (args.broker, args.group, args.port, args.host) == (
        None,
        None,
        DEFAULT_PORT,
        "127.0.0.1",
    )
    assert args.topics.split(",") == [
        "events.click",
        "events.search",
        "events.comment",
        "items",
        "users.delete",
    ]
    args = parser.parse_args(["--broker", "kafka:9092", "--group", "g", "--port", "9999"])
    assert (args.broker, args.group, args.port) == ("kafka:9092", "g", 9999)
