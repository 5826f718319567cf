"""Settings: flags, else `DAGNATS_BRIDGE_*` environment variables, else defaults."""

from __future__ import annotations

import enum
from datetime import timedelta
from pathlib import Path

import attrs

from app.logging_setup import LogFormat
from domain.services.runs import FINISHED_RUNS_KEPT

MAX_REPLICAS = 5
"""JetStream's own limit on a stream's replicas."""


class Backend(enum.Enum):
    NATS = "nats"
    """JetStream: an external server or cluster (`nats_url`), else an embedded nats-server."""
    MEMORY = "memory"
    """No NATS at all: the in-process simulator."""


class ClockKind(enum.Enum):
    SYSTEM = "system"
    MANUAL = "manual"
    """Time moves only on `POST /v1/sim/clock/advance` (memory backend only)."""


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
    log_format: LogFormat = LogFormat.AUTO
    metrics_auth: bool = False
    """Put /metrics behind the bearer token (open by default, as /healthz and /readyz are)."""
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
    replicas: int = attrs.field(
        default=1, validator=[attrs.validators.ge(1), attrs.validators.le(MAX_REPLICAS)]
    )
    """Replicas of the streams and buckets the bridge creates (provisioned, and its own)."""
    simulator: bool = False
    """Serve /v1/sim/ on NATS (the embedded mode does; the memory backend always does)."""
    simulate_engine: bool | None = None
    """React to the bridge's events as the engine does; None: on for the memory backend and
    the embedded nats-server, off against an external NATS."""
    clock: ClockKind = attrs.field(default=ClockKind.SYSTEM)
    sim_max_attempts: int = attrs.field(default=3, validator=attrs.validators.gt(0))
    """Engine simulation: attempts of a step, the first included, before its run fails."""
    sim_initial_delay_ms: int = attrs.field(default=1_000, validator=attrs.validators.ge(0))
    """Engine simulation: the backoff before the second attempt."""
    sim_backoff_factor: float = attrs.field(default=2.0, validator=attrs.validators.gt(0))
    """Engine simulation: each further backoff is this many times the previous one."""
    sim_max_iterations: int = attrs.field(default=10, validator=attrs.validators.gt(0))
    """Engine simulation: iterations of an agent loop (continue) before its run fails."""
    sim_runs_kept: int = attrs.field(default=FINISHED_RUNS_KEPT, validator=attrs.validators.gt(0))
    """Simulator: the finished runs kept (the engine simulation's, and their history with the
    memory backend), the latest to finish; running ones are all kept."""
    token: str | None = attrs.field(default=None, repr=False)
    """Bearer token for /v1/, named `default`; with no tokens file either, development mode
    (no auth)."""
    tokens_file: Path | None = None
    """Named bearer tokens, one `name:token` a line, re-read when the file changes."""
    drain_seconds: float = attrs.field(default=20.0, validator=attrs.validators.ge(0))
    """The grace period between SIGTERM and the stop, for the requests in flight."""
    drain_min_seconds: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    """The least time from SIGTERM to the stop, /readyz answering 503, for load balancers to
    take the bridge out; 0 stops as soon as nothing is in flight."""
    workers: int = attrs.field(default=1, validator=attrs.validators.gt(0))
    """Bridge processes serving the one port (app.workers); NATS backend only."""

    @clock.validator
    def _manual_needs_memory(self, _: attrs.Attribute[ClockKind], value: ClockKind) -> None:
        if value is ClockKind.MANUAL and self.backend is not Backend.MEMORY:
            raise ValueError("the manual clock needs the memory backend (--backend memory)")

    @drain_min_seconds.validator
    def _minimum_within_the_grace(self, _: attrs.Attribute[float], value: float) -> None:
        if value > self.drain_seconds:
            raise ValueError(
                f"--drain-min-seconds ({value:g}) is longer than --drain-seconds "
                f"({self.drain_seconds:g}), the grace that ends the drain"
            )

    @replicas.validator
    def _replicas_need_a_cluster(self, _: attrs.Attribute[int], value: int) -> None:
        if value > 1 and not (self.backend is Backend.NATS and self.nats_url):
            raise ValueError(
                "--replicas above 1 needs a NATS cluster (--nats-url): the memory backend and "
                "the embedded nats-server keep one copy"
            )

    @workers.validator
    def _workers_share_nats(self, _: attrs.Attribute[int], value: int) -> None:
        if value == 1:
            return
        if self.backend is Backend.MEMORY:
            raise ValueError(
                "--workers above 1 needs the NATS backend: with --backend memory each worker "
                "would have a memory of its own, and resolves would miss the leases"
            )
        if self.simulates_engine:
            raise ValueError(
                "--workers above 1 needs the engine simulation off (--no-simulate-engine): "
                "each worker would simulate an engine of its own"
            )

    @property
    def backend_name(self) -> str:
        return self.backend.value

    @property
    def needs_embedded_nats(self) -> bool:
        return self.backend is Backend.NATS and not self.nats_url

    @property
    def simulates_engine(self) -> bool:
        if self.simulate_engine is not None:
            return self.simulate_engine
        return self.backend is Backend.MEMORY or self.needs_embedded_nats

    @property
    def engine_mode(self) -> str:
        """`simulated` or `off`, the key of the container's choice of event log."""
        return "simulated" if self.simulates_engine else "off"

    @property
    def clock_name(self) -> str:
        return self.clock.value

    @property
    def serves_simulator(self) -> bool:
        return self.simulator or self.simulates_engine or self.backend is Backend.MEMORY

    @property
    def sim_initial_delay(self) -> timedelta:
        return timedelta(milliseconds=self.sim_initial_delay_ms)

    @property
    def nats_servers(self) -> list[str]:
        return [url.strip() for url in (self.nats_url or "").split(",") if url.strip()]

    @property
    def drain_grace(self) -> timedelta:
        return timedelta(seconds=self.drain_seconds)

    @property
    def drain_minimum(self) -> timedelta:
        return timedelta(seconds=self.drain_min_seconds)

    @property
    def heartbeat_interval(self) -> timedelta:
        return timedelta(milliseconds=self.heartbeat_interval_ms)

    @property
    def ack_wait(self) -> timedelta:
        return timedelta(milliseconds=self.ack_wait_ms)
