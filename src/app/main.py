"""The application factory: Litestar at the edge, the container behind it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, TypeVar

from dependency_injector import providers
from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from nats.js.client import JetStreamContext

from adapters.http.auth import PROTECTED_SEGMENT, BearerAuth
from adapters.http.boundary import RequestBoundary
from adapters.http.metrics import METRICS_PATH, metrics
from adapters.http.openapi import COMPONENTS
from adapters.http.paths import RawPathLitestar
from adapters.http.problems import EXCEPTION_HANDLERS
from adapters.http.routes import API_HANDLERS, engine_router, simulator_router
from adapters.nats.connection import NatsOptions, close, connect
from adapters.nats.jetstream import JetStream
from adapters.nats.kv import ensure_leases_bucket, ensure_polls_bucket, provision_buckets
from adapters.nats.provision import provision_streams, while_cluster_forms
from app.container import Container
from app.settings import Backend, Settings
from app.token_watch import watching
from app.tracing import tracing_lifespan
from app.version import package_version
from domain.errors import DomainError
from domain.redaction import without_userinfo as without_userinfo  # noqa: PLC0414 - re-exported

log = logging.getLogger("dagnats_bridge")

T = TypeVar("T")

SERVICES = (
    "poll_service",
    "resolve_service",
    "worker_registry",
    "read_checkpoint",
    "enqueue_task",
    "put_signal",
    "advance_clock",
    "simulated_runs",
    "connect_settings",
    "clock",
    "drain",
)


def from_container(provider: providers.Provider[T]) -> Provide:
    """Bridge one provider into Litestar's DI (see STYLE.md: no wiring, no @inject)."""

    def dependency() -> T:
        return provider()

    return Provide(dependency, sync_to_thread=False, use_cache=True)


LEASE_BUCKET_MIN_TTL = timedelta(hours=24)
AUTH_OFF = "OFF (development mode: neither DAGNATS_BRIDGE_TOKEN nor a tokens file)"


@asynccontextmanager
async def bridge_lifespan(container: Container) -> AsyncIterator[None]:
    async with tracing_lifespan(), nats_lifespan(container), engine_lifespan(container):
        async with watching(container.tokens()):
            _announce(container)
            yield
        await container.release_leases().left_behind()
    log.info("dagnats-bridge stopped")


@asynccontextmanager
async def engine_lifespan(container: Container) -> AsyncIterator[None]:
    """Run the engine simulation when it is on; its pending retries end before NATS does."""
    if not container.settings().simulates_engine:
        yield
        return
    async with container.engine():
        yield


@asynccontextmanager
async def nats_lifespan(container: Container) -> AsyncIterator[None]:
    """Open NATS for the NATS backend, provision what is asked for, drain on the way out."""
    settings = container.settings()
    if settings.backend is not Backend.NATS:
        yield
        return
    client = await connect(
        NatsOptions(
            servers=settings.nats_servers,
            creds=settings.nats_creds,
            tls_ca=settings.nats_tls_ca,
            tls_cert=settings.nats_tls_cert,
            tls_key=settings.nats_tls_key,
        ),
        # The polls waiting on a request that the server may have lost with the old
        # connection wake and send another.
        on_reconnected=lambda: container.queue().reconnected(),
    )
    try:
        jetstream = JetStream(client)
        # Before anything that may outlast a reconnection: its callback needs the queue.
        container.nats.override(providers.Object(client))
        container.jetstream.override(providers.Object(jetstream))
        try:
            await while_cluster_forms(lambda: _create_what_is_missing(jetstream, settings))
        except DomainError as exc:
            # One line that says why, before the framework's traceback.
            log.error(
                "cannot create the streams and buckets (replicas %d): %s", settings.replicas, exc
            )
            raise
        container.telemetry().watch_nats(client)
        try:
            yield
        finally:
            # Messages pulled ahead for waiting polls go back before the connection does.
            await container.queue().close()
    finally:
        await close(client)


async def _create_what_is_missing(jetstream: JetStreamContext, settings: Settings) -> None:
    """The provisioned streams and buckets, and the bridge's own buckets, with the replicas
    asked; what exists is adopted as it is."""
    replicas = settings.replicas
    if settings.provision:
        await provision_streams(jetstream, replicas=replicas)
        await provision_buckets(jetstream, replicas=replicas)
    # The lease bucket's TTL only collects garbage: a lease's own deadline rules, and
    # every extension re-puts it, so the TTL must outlast the longest AckWait in use.
    lease_ttl = max(LEASE_BUCKET_MIN_TTL, 2 * settings.ack_wait)
    await ensure_leases_bucket(jetstream, lease_ttl, replicas=replicas)
    await ensure_polls_bucket(jetstream, replicas=replicas)


def create_app(container: Container) -> Litestar:
    settings = container.settings()
    dependencies: dict[str, Any] = {
        name: from_container(getattr(container, name)) for name in SERVICES
    }
    dependencies["event_log"] = from_container(container.events)
    dependencies["backend_probe"] = from_container(container.probe)
    dependencies["metrics_exposition"] = from_container(container.telemetry)
    tokens = container.tokens().tokens
    auth = BearerAuth(tokens, protected=protected_segments(settings)) if tokens else None
    handlers: list[Any] = [*API_HANDLERS, metrics]
    if settings.serves_simulator:
        handlers.append(simulator_router)
    if settings.simulates_engine:
        handlers.append(engine_router)
    return RawPathLitestar(
        gate=None if auth is None else auth.check,
        route_handlers=handlers,
        dependencies=dependencies,
        exception_handlers=EXCEPTION_HANDLERS,
        outermost=lambda app: RequestBoundary(app, container.telemetry(), container.drain()),
        request_max_body_size=settings.max_body_bytes,
        # Logging is the process's (set up by the CLI), written synchronously, so no line is
        # lost when the process ends on a signal.
        logging_config=None,
        openapi_config=OpenAPIConfig(
            title="dagnats-bridge", version=package_version(), components=COMPONENTS
        ),
        lifespan=[lambda _: bridge_lifespan(container)],
    )


def _announce(container: Container) -> None:
    settings = container.settings()
    tokens = container.tokens().tokens
    auth = f"on (tokens {', '.join(tokens.names)})" if tokens else AUTH_OFF
    backend = settings.backend.value
    if settings.backend is Backend.NATS:
        backend = f"nats at {','.join(map(without_userinfo, settings.nats_servers))}"
    log.info(
        "dagnats-bridge serving on http://%s:%s, backend %s, auth %s, simulator %s, "
        "engine simulation %s, clock %s",
        settings.host,
        settings.port,
        backend,
        auth,
        "on" if settings.serves_simulator else "off",
        "on" if settings.simulates_engine else "off",
        settings.clock_name,
    )


def protected_segments(settings: Settings) -> frozenset[str]:
    """What needs the token: /v1/, and /metrics with metrics_auth (else it stays open, as
    /healthz and /readyz do, for scrapers that carry no token)."""
    if settings.metrics_auth:
        return frozenset({PROTECTED_SEGMENT, METRICS_PATH.strip("/")})
    return frozenset({PROTECTED_SEGMENT})
