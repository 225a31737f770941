"""One typed settings object, read from the environment once and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.lifecycle.policy import parse_policies
from service.lifecycle.routing import parse_routes, parse_shadows


class Settings(BaseSettings):
    """Every knob of the service; each field is the env var `MNIST_<FIELD>` (see docs/configuration.md)."""

    model_config = SettingsConfigDict(env_prefix="MNIST_", extra="ignore")

    # HTTP server (gunicorn)
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8000, ge=1, le=65535, description="Bind port.")
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="Open Inference Protocol v2 gRPC port, in every worker (0 = off)."
    )
    workers: int = Field(2, ge=1, le=64, description="gunicorn worker processes.")
    threads: int = Field(
        64,
        ge=1,
        le=256,
        description="Threads per worker (requests served at once); keep above MNIST_MAX_INFLIGHT, or "
        "requests beyond the threads wait in gunicorn's queue, where admission control cannot shed them.",
    )
    timeout_s: int = Field(30, ge=1, description="gunicorn worker timeout.")
    graceful_timeout_s: int = Field(
        20, ge=1, description="Time allowed to finish requests and drain on SIGTERM."
    )

    # Data (training and evaluation only)
    data_dir: Path = Field(Path("data/mnist"), description="Folder with the four MNIST *-ubyte.gz files.")

    # Models and inference
    model_dir: Path = Field(Path("models"), description="Directory holding models/<name>/<version>/.")
    default_model: str = Field("cnn", description="Model used when a request names none.")
    max_batch_size: int = Field(32, ge=1, le=1024, description="Largest micro-batch sent to a model.")
    max_batch_wait_ms: float = Field(2.0, ge=0, le=1000, description="Longest wait to fill a batch.")
    inference_threads: int = Field(1, ge=1, le=64, description="Threads each LiteRT interpreter may use.")
    max_inflight: int = Field(
        48,
        ge=0,
        le=4096,
        description="Inference requests one worker takes at once, HTTP and gRPC together (decoding, queued "
        "for or in the model); more are shed at once with 503 + Retry-After or UNAVAILABLE (0 = no bound).",
    )

    # Model lifecycle (docs/lifecycle.md)
    model_poll_s: float = Field(
        10.0, ge=0, le=3600, description="Seconds between looks at the model directory (0 = load once)."
    )
    model_version_policy: str = Field(
        "latest",
        description="Version policy: latest, latest:N, specific:1,3 or all (or 'cnn=latest:2; softmax=all').",
    )
    model_routing: str = Field(
        "",
        description="Canary weights of versions per model, e.g. 'cnn: 1=90, 2=10' (empty = highest version).",
    )
    model_shadow: str = Field(
        "",
        description="Shadow version per model (answer recorded, never returned), e.g. 'cnn: 2'.",
    )
    model_overrides_file: Path = Field(
        Path("var/model-overrides.json"),
        description="Where the workers share runtime load/unload overrides of the version policies.",
    )
    routing_seed: int | None = Field(
        None, description="Seeds the canary draw (same seed, same picks); unset = random."
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token of the v2 model repository routes (index, load, unload); unset = 403.",
    )

    # Input limits
    max_images_per_request: int = Field(
        1024, ge=1, le=65536, description="Most images one request may carry, in every API (400 above)."
    )
    max_upload_bytes: int = Field(5_000_000, ge=1024, description="Largest request body (413 above).")
    max_image_pixels: int = Field(25_000_000, ge=784, description="Largest decoded image (width x height).")
    keep_image_bytes: int = Field(262_144, ge=0, description="Original images up to this size are stored.")

    # Prediction store
    store_url: str = Field(
        "sqlite:///var/predictions.db",
        # STORE_URL too: the name deployments (and issue 4's docs) use for the Cassandra URL.
        validation_alias=AliasChoices("MNIST_STORE_URL", "STORE_URL", "store_url"),
        description="sqlite:///path or cassandra://user:pass@host1,host2:9042/keyspace?dc=..&consistency=..",
    )
    write_queue_size: int = Field(10_000, ge=1, description="Records waiting for the store before overflow.")
    spool_dir: Path = Field(
        Path("var/spool"), description="Durable spool for records Cassandra could not take."
    )
    spool_max_bytes: int = Field(1_073_741_824, ge=1024, description="Spool size cap.")
    spool_drain_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="On SIGTERM, seconds a worker keeps replaying its Cassandra spool before it exits "
        "(added to gunicorn's graceful timeout); for a spool that dies with its pod.",
    )
    durability: Literal["memory", "disk", "store"] = Field(
        "memory",
        description="Where an answered prediction's record is before the answer leaves: memory (the write "
        "queue), disk (the spool folder's journal, fsynced in groups) or store (acknowledged by the store).",
    )
    durability_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Longest an answer waits for MNIST_DURABILITY disk or store; 503 after that.",
    )
    cassandra_username: str | None = Field(None, description="Overrides the user in STORE_URL.")
    cassandra_password: SecretStr | None = Field(None, description="Overrides the password in STORE_URL.")
    cassandra_tls_ca: Path | None = Field(None, description="CA bundle; enables TLS to Cassandra.")
    cassandra_tls_cert: Path | None = Field(
        None, description="Client certificate chain (PEM) for Cassandra nodes that require one (mutual TLS)."
    )
    cassandra_tls_key: Path | None = Field(None, description="Private key (PEM) of MNIST_CASSANDRA_TLS_CERT.")
    cassandra_tls_key_password: SecretStr | None = Field(
        None, description="Passphrase of an encrypted MNIST_CASSANDRA_TLS_KEY."
    )
    cassandra_ttl_s: int = Field(0, ge=0, description="Retention of prediction rows (0 = keep forever).")
    cassandra_max_in_flight: int = Field(64, ge=1, description="Async writes in flight per process.")

    # Logs and web
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    log_format: Literal["json", "text"] = Field("json", description="Log line format.")
    cors_origins: str = Field("", description="Comma-separated origins allowed by CORS ('*' for any).")

    @field_validator("model_version_policy")
    @classmethod
    def _policy_parses(cls, value: str) -> str:
        parse_policies(value)  # PolicyError is a ValueError: pydantic names the variable
        return value

    @field_validator("model_routing")
    @classmethod
    def _routing_parses(cls, value: str) -> str:
        parse_routes(value)
        return value

    @field_validator("model_shadow")
    @classmethod
    def _shadow_parses(cls, value: str) -> str:
        parse_shadows(value)
        return value
