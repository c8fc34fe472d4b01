"""Settings: env vars, validation, Kafka security passthrough."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.config import Settings


def test_defaults_are_the_embedded_local_setup(monkeypatch):
    for k in list(__import__("os").environ):
        if k.startswith("INTEREST_"):
            monkeypatch.delenv(k)
    s = Settings()
    assert (s.broker, s.web_host, s.web_port) == ("127.0.0.1:9092", "127.0.0.1", 6066)
    assert s.api_token is None and s.qdrant_url is None and s.broker_credentials() is None


def test_env_vars_override_and_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv("INTEREST_PARTITIONS", "8")
    monkeypatch.setenv("INTEREST_WEB_HOST", "0.0.0.0")
    s = Settings()
    assert s.partitions == 8 and s.web_host == "0.0.0.0"
    with pytest.raises(ValidationError, match="host:port"):
        Settings(broker="localhost")
    with pytest.raises(ValidationError):
        Settings(partitions=0)


def test_kafka_sasl_and_tls_settings_become_faust_credentials(tmp_path):
    import faust

    s = Settings(
        kafka_sasl_mechanism="SCRAM-SHA-512", kafka_sasl_username="svc", kafka_sasl_password="pw"
    )
    c = s.broker_credentials()
    assert isinstance(c, faust.SASLCredentials)
    assert (c.username, c.password, c.mechanism.value) == ("svc", "pw", "SCRAM-SHA-512")
    assert "pw" not in repr(s)  # secrets stay out of logs
    with pytest.raises(OSError):  # a CA file that does not exist is an error, not plaintext
        Settings(kafka_ssl_cafile=tmp_path / "missing.pem").broker_credentials()
