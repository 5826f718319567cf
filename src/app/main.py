"""The application factory: Litestar at the edge, the container behind it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

import nats.errors
from dependency_injector import providers
from litestar import Litestar
from litestar.di import Provide
from litestar.middleware import ASGIMiddleware
from litestar.openapi import OpenAPIConfig
from nats.aio.client import Client as NatsClient

from adapters.http.auth import BearerAuth
from adapters.http.problems import EXCEPTION_HANDLERS
from adapters.http.routes import API_HANDLERS, engine_router, simulator_router
from adapters.nats.connection import NatsOptions, connect
from adapters.nats.kv import ensure_leases_bucket, ensure_polls_bucket, provision_buckets
from adapters.nats.provision import provision_streams
from app.container import Container
from app.settings import Backend

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
)


def from_container(provider: providers.Provider[T]) -> Provide:
    """Bridge one provider into Litestar's DI (see STYLE.md: no wiring, no @inject)."""

    def dependency() -> T:
        return provider()

    return Provide(dependency, sync_to_thread=False, use_cache=True)


LEASE_BUCKET_MIN_TTL = timedelta(hours=24)


@asynccontextmanager
async def bridge_lifespan(container: Container) -> AsyncIterator[None]:
    async with nats_lifespan(container), engine_lifespan(container):
        _announce(container)
        yield
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
        )
    )
    try:
        jetstream = client.jetstream()
        if settings.provision:
            await provision_streams(jetstream)
            await provision_buckets(jetstream)
        # The lease bucket's TTL only collects garbage: a lease's own deadline rules, and
        # every extension re-puts it, so the TTL must outlast the longest AckWait in use.
        await ensure_leases_bucket(jetstream, max(LEASE_BUCKET_MIN_TTL, 2 * settings.ack_wait))
        await ensure_polls_bucket(jetstream)
        container.nats.override(providers.Object(client))
        container.jetstream.override(providers.Object(jetstream))
        try:
            yield
        finally:
            # Messages pulled ahead for waiting polls go back before the connection does.
            await container.queue().close()
    finally:
        await _close(client)


async def _close(client: NatsClient) -> None:
    """Drain (let in-flight messages finish); while NATS is away that fails, so just close."""
    try:
        await client.drain()
    except nats.errors.Error as exc:
        log.warning("NATS not drained (%s); closing", type(exc).__name__)
        await client.close()


def create_app(container: Container) -> Litestar:
    settings = container.settings()
    dependencies: dict[str, Any] = {
        name: from_container(getattr(container, name)) for name in SERVICES
    }
    dependencies["event_log"] = from_container(container.events)
    dependencies["backend_probe"] = from_container(container.probe)
    middleware: list[ASGIMiddleware] = []
    if settings.token:
        middleware.append(BearerAuth(settings.token))
    handlers: list[Any] = [*API_HANDLERS]
    if settings.serves_simulator:
        handlers.append(simulator_router)
    if settings.simulates_engine:
        handlers.append(engine_router)
    return Litestar(
        route_handlers=handlers,
        dependencies=dependencies,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        middleware=middleware,
        request_max_body_size=settings.max_body_bytes,
        # Logging is the process's (set up by the CLI), written synchronously, so no line is
        # lost when the process ends on a signal.
        logging_config=None,
        openapi_config=OpenAPIConfig(title="dagnats-bridge", version=_version()),
        lifespan=[lambda _: bridge_lifespan(container)],
    )


def _announce(container: Container) -> None:
    settings = container.settings()
    auth = "on" if settings.token else "OFF (development mode: DAGNATS_BRIDGE_TOKEN is unset)"
    backend = settings.backend.value
    if settings.backend is Backend.NATS:
        backend = f"nats at {settings.nats_url}"
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


def _version() -> str:
    try:
        return version("dagnats-bridge")
    except PackageNotFoundError:
        return "0.0.0"
