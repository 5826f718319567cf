"""Routing on the path as the client sent it, so a path parameter can hold `/`.

A task id is `<run_id>.<step_id>`, and the engine does not restrict step ids: a task id the
bridge hands out may contain `/` (sent as `%2F`) or `%`. The server decodes the path before
Litestar routes it, so `/v1/tasks/a%2Fb/resolve` would arrive as four segments and match no
route. Where a segment holds an encoded `/` or `%`, the app routes instead on the raw path
with each segment decoded but those two characters left escaped, and the handlers read such
a parameter through `path_param`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote

from litestar import Litestar, Response
from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPScope,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Receive,
    Scope,
    Send,
)

from adapters.http.problems import send_outside_a_route


def path_param(value: str) -> str:
    """A path parameter as the client meant it (the identity unless the path was escaped)."""
    return unquote(value)


def routing_path(raw_path: bytes) -> str | None:
    """The path to route on, or None when the server's decoded path routes as it is."""
    try:
        segments = [unquote(segment) for segment in raw_path.decode("ascii").split("/")]
    except UnicodeDecodeError:
        return None
    if not any("/" in segment or "%" in segment for segment in segments):
        return None
    return "/".join(_escaped(segment) for segment in segments)


def _escaped(segment: str) -> str:
    return segment.replace("%", "%25").replace("/", "%2F")


Gate = Callable[[HTTPScope], Response[bytes] | None]
"""A check of an HTTP request before it is routed: the answer that refuses it, or None."""


class RawPathLitestar(Litestar):
    """Litestar that keeps an encoded `/` or `%` inside its path segment (see the module),
    checks each HTTP request with `gate` (if any) before routing it, and runs everything
    inside `outermost` (if any): a layer that sees every request and every answer."""

    def __init__(
        self,
        *,
        gate: Gate | None = None,
        outermost: Callable[[ASGIApp], ASGIApp] | None = None,
        **options: Any,
    ) -> None:
        # Read by _create_asgi_handler, which Litestar's init calls.
        self._gate = gate
        self._outermost = outermost
        super().__init__(**options)

    def _create_asgi_handler(self) -> ASGIApp:
        """Litestar's handler behind the gate. Litestar runs middleware only once a route
        matched, too late for a check that must not tell an unknown path (404) or method
        (405) from a known one, and for a layer that must see those answers too."""
        handler = self._gated(super()._create_asgi_handler())
        return handler if self._outermost is None else self._outermost(handler)

    def _gated(self, handler: ASGIApp) -> ASGIApp:
        gate = self._gate
        if gate is None:
            return handler

        async def gated(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == ScopeType.HTTP and (refusal := gate(scope)) is not None:
                await send_outside_a_route(refusal, scope, receive, send)
                return
            await handler(scope, receive, send)

        return gated

    async def __call__(
        self,
        scope: Scope | LifeSpanScope,
        receive: Receive | LifeSpanReceive,
        send: Send | LifeSpanSend,
    ) -> None:
        if scope["type"] == ScopeType.HTTP:
            _route_on_raw_path(cast("HTTPScope", scope))
        await super().__call__(scope, receive, send)


def _route_on_raw_path(scope: HTTPScope) -> None:
    raw_path = scope.get("raw_path")
    path = routing_path(raw_path) if raw_path else None
    if path is not None:
        scope["path"] = path
