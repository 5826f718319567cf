"""Settings: flags, else `DAGNATS_BRIDGE_*` environment variables, else defaults."""

from __future__ import annotations

import enum
from datetime import timedelta

import attrs


class Backend(enum.Enum):
    MEMORY = "memory"


@attrs.frozen(kw_only=True)
class Settings:
    backend: Backend = Backend.MEMORY
    host: str = "127.0.0.1"
    port: int = 8080
    heartbeat_interval_ms: int = attrs.field(default=25_000, validator=attrs.validators.gt(0))
    ack_wait_ms: int = attrs.field(default=300_000, validator=attrs.validators.gt(0))
    max_body_bytes: int = attrs.field(default=1_048_576, validator=attrs.validators.gt(0))
    simulator: bool = True
    log_level: str = "INFO"
    token: str | None = attrs.field(default=None, repr=False)
    """Bearer token for /v1/; None is development mode (no auth)."""

    @property
    def heartbeat_interval(self) -> timedelta:
        return timedelta(milliseconds=self.heartbeat_interval_ms)

    @property
    def ack_wait(self) -> timedelta:
        return timedelta(milliseconds=self.ack_wait_ms)
