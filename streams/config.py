"""One settings object for the worker; every field can be set as an `INTEREST_*` env var.

CLI flags of `interest-stream up` override the environment, which overrides the defaults.
The defaults describe the embedded single-machine setup: Tansu on 127.0.0.1:9092, Qdrant
in local mode under the data directory, the web server on 127.0.0.1:6066.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from encoders.models import DEFAULT_MODEL

DEFAULT_BROKER = "127.0.0.1:9092"
DEFAULT_WEB_PORT = 6066


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTEREST_", extra="ignore")

    broker: str = DEFAULT_BROKER  # host:port[,host:port]
    data_dir: Path = Path("./data")
    app_id: str = "interest-stream"  # the Kafka consumer group; changelog topics derive from it
    partitions: int = Field(default=4, ge=1, le=1024)
    store: Literal["rocksdb", "memory"] = "rocksdb"
    qdrant_url: str | None = None  # None: qdrant-client local mode under data_dir/qdrant
    qdrant_api_key: SecretStr | None = None  # for a Qdrant server that requires one
    # embedded store without a server: qdrant-client local mode under data_dir/qdrant, in a
    # child process (default; streams/qdrant_process.py: its writes run on another core,
    # freshness p99 4.2 s -> 0.7 s at 1,000 events/s) or in-process ("local"), or Qdrant Edge
    # (Rust, in-process; streams/edge_client.py) under data_dir/qdrant-edge
    qdrant_engine: Literal["local-process", "local", "edge"] = "local-process"
    # Kafka security, passed through to the client: SASL (PLAIN or SCRAM) and/or TLS
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None  # set: TLS to the broker, verified with this CA
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=DEFAULT_WEB_PORT, ge=0, le=65535)
    api_token: str | None = None  # required by mutating endpoints; None: they are disabled
    model: str = DEFAULT_MODEL
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # max cost of a micro-batch (a click costs 1, a text 25); under that, a batch holds what
    # the last batches processed in batch_target_s (streams/batch_sizer.py): up to 10,000
    # clicks, a few hundred texts
    batch_size: int = Field(default=10_000, ge=1)
    batch_target_s: float = Field(default=2.0, gt=0)
    batch_within_s: float = Field(default=0.05, gt=0)  # max wait to fill a micro-batch
    # how long a fetch may wait at the broker for data. Faust sets 1.5 s, and Tansu holds a
    # fetch that long even while messages arrive: ~1 s of freshness at 1,000 events/s
    fetch_max_wait_ms: int = Field(default=100, ge=0, le=1500)
    # ONNX Runtime threads per encoder call; 0: one per core
    encoder_threads: int = Field(default=0, ge=0, le=256)
    # Qdrant writes: at most this many user points per upsert call, and this many calls
    # queued for the writer thread while the event loop works on a batch (sync_queue.py)
    qdrant_write_points: int = Field(default=256, ge=1, le=100_000)
    qdrant_writes_ahead: int = Field(default=3, ge=1, le=64)
    item_cache_size: int = Field(default=20_000, ge=0)  # item encodings kept in memory
    # encodings of recent user texts (repeated searches), ~5 KB each; 0 turns it off
    text_cache_size: int = Field(default=10_000, ge=0)
    text_cache_max_age_s: float = Field(default=3600.0, gt=0)
    park_max_wait_s: float = Field(default=60.0, ge=0)  # a click waits this long for its item
    park_max_per_user: int = Field(default=32, ge=0)  # parked clicks one user may hold
    dedupe_window: int = Field(default=128, ge=0)  # recent event ids remembered per user
    # how often consumed offsets are committed; whatever was not committed is read again
    # after a crash (and recognised as replayed: effectively once)
    commit_interval_s: float = Field(default=2.8, gt=0)
    log_level: Literal["crit", "error", "warn", "info", "debug"] = "info"
    cold_start_min_events: int = Field(default=3, ge=0)  # fewer: popularity instead
    # popularity (cold start, and the prior below) counts clicks with this half-life. The
    # defaults of these three are what `interest-stream eval` tuned on MovieLens-100k's train
    # period (docs/evaluation.md); it prints the values for your own logs
    popularity_half_life_s: float = Field(default=3650 * 86_400.0, gt=0)
    # recommendations rank by score + γ·prior, prior = log1p(popularity) / log1p(top
    # popularity) in [0, 1]; γ = 0 ranks by the interest vectors alone
    popularity_prior_weight: float = Field(default=0.2, ge=0)
    prior_candidates: int = Field(default=100, ge=1, le=10_000)  # re-ranked with the prior
    # p = σ(β·s + b) on an item's ranking score s: fitted by `interest-stream eval` on
    # MovieLens-100k's train period (test ECE 0.013, docs/evaluation.md); it prints β and b
    # for your own logs
    calibration_beta: float = 11.6
    calibration_bias: float = -15.47

    @field_validator("broker")
    @classmethod
    def _broker_has_port(cls, v: str) -> str:
        for part in v.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"broker must be host:port[,host:port], got {v!r}")
        return v

    def broker_credentials(self) -> object | None:
        """Faust credentials for the Kafka security settings (None: plaintext)."""
        import ssl

        import faust

        context = None
        if self.kafka_ssl_cafile is not None:
            context = ssl.create_default_context(cafile=str(self.kafka_ssl_cafile))
        if self.kafka_sasl_mechanism is not None:
            password = self.kafka_sasl_password
            return faust.SASLCredentials(
                username=self.kafka_sasl_username,
                password=None if password is None else password.get_secret_value(),
                mechanism=self.kafka_sasl_mechanism,
                ssl_context=context,
            )
        return None if context is None else faust.SSLCredentials(context)

    @property
    def qdrant_path(self) -> Path:
        return self.data_dir / ("qdrant-edge" if self.qdrant_engine == "edge" else "qdrant")

    @property
    def table_dir(self) -> Path:
        return self.data_dir / "tables"

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"
