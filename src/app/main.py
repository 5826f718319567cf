"""The application factory: Litestar at the edge, the container behind it."""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from dependency_injector import providers
from litestar import Litestar
from litestar.di import Provide
from litestar.middleware import ASGIMiddleware
from litestar.openapi import OpenAPIConfig

from adapters.http.auth import BearerAuth
from adapters.http.problems import EXCEPTION_HANDLERS
from adapters.http.routes import API_HANDLERS, simulator_router
from app.container import Container

log = logging.getLogger("dagnats_bridge")

T = TypeVar("T")

SERVICES = (
    "poll_service",
    "resolve_service",
    "worker_registry",
    "read_checkpoint",
    "enqueue_task",
    "connect_settings",
    "clock",
)


def from_container(provider: providers.Provider[T]) -> Provide:
    """Bridge one provider into Litestar's DI (see STYLE.md: no wiring, no @inject)."""

    def dependency() -> T:
        return provider()

    return Provide(dependency, sync_to_thread=False, use_cache=True)


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
    if settings.simulator:
        handlers.append(simulator_router)
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
        on_startup=[lambda: _announce(container)],
        on_shutdown=[lambda: log.info("dagnats-bridge stopped")],
    )


def _announce(container: Container) -> None:
    settings = container.settings()
    auth = "on" if settings.token else "OFF (development mode: DAGNATS_BRIDGE_TOKEN is unset)"
    log.info(
        "dagnats-bridge serving on http://%s:%s, backend %s, auth %s, simulator %s",
        settings.host,
        settings.port,
        settings.backend.value,
        auth,
        "on" if settings.simulator else "off",
    )


def _version() -> str:
    try:
        return version("dagnats-bridge")
    except PackageNotFoundError:
        return "0.0.0"
