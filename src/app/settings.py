"""Settings: flags, else `DAGNATS_BRIDGE_*` environment variables, else defaults."""

from __future__ import annotations

import enum
from datetime import timedelta
from pathlib import Path

import attrs


class Backend(enum.Enum):
    NATS = "nats"
    """JetStream: an external server or cluster (`nats_url`), else an embedded nats-server."""
    MEMORY = "memory"
    """No NATS at all: the in-process simulator."""


@attrs.frozen(kw_only=True)
class Settings:
    backend: Backend = Backend.NATS
    host: str = "127.0.0.1"
    port: int = 8080
    heartbeat_interval_ms: int = attrs.field(default=25_000, validator=attrs.validators.gt(0))
    ack_wait_ms: int = attrs.field(default=300_000, validator=attrs.validators.gt(0))
    """AckWait of the task consumers the bridge creates (memory backend: of its queue)."""
    max_body_bytes: int = attrs.field(default=1_048_576, validator=attrs.validators.gt(0))
    log_level: str = "INFO"
    nats_url: str | None = None
    """Comma-separated server URLs; None starts the embedded nats-server."""
    nats_creds: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None
    data_dir: Path = Path(".dagnats")
    """Where the embedded nats-server keeps its store."""
    provision: bool = False
    """Create the engine's streams and buckets when absent (the embedded mode does)."""
    simulator: bool = False
    """Serve /v1/sim/ on NATS (the embedded mode does; the memory backend always does)."""
    token: str | None = attrs.field(default=None, repr=False)
    """Bearer token for /v1/; None is development mode (no auth)."""

    @property
    def backend_name(self) -> str:
        return self.backend.value

    @property
    def needs_embedded_nats(self) -> bool:
        return self.backend is Backend.NATS and not self.nats_url

    @property
    def serves_simulator(self) -> bool:
        return self.simulator or self.backend is Backend.MEMORY

    @property
    def nats_servers(self) -> list[str]:
        return [url.strip() for url in (self.nats_url or "").split(",") if url.strip()]

    @property
    def heartbeat_interval(self) -> timedelta:
        return timedelta(milliseconds=self.heartbeat_interval_ms)

    @property
    def ack_wait(self) -> timedelta:
        return timedelta(milliseconds=self.ack_wait_ms)
