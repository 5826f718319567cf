"""`GET /metrics` and the count of HTTP requests by route template and status."""

from __future__ import annotations

from typing import Final, Protocol

from litestar import Response, get
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from adapters.http.deps import Injected

METRICS_PATH = "/metrics"
FAULT_STATUS = 500
UNMATCHED_ROUTE: Final = "unmatched"
"""The route label of a request that no route matched: one series, whatever its path."""
HTTP_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
OTHER_METHOD: Final = "other"
"""The method label of an unmatched request whose method is not one of HTTP_METHODS (a
client may send any token there)."""


class RequestCounter(Protocol):
    def request_answered(self, method: str, route: str, status: int) -> None: ...


class MetricsExposition(Protocol):
    @property
    def content_type(self) -> str: ...

    async def exposition(self) -> bytes: ...


class RequestMetrics(ASGIMiddleware):
    """Count each routed HTTP request once answered, labelled by its route template (never
    the raw path: task ids would make a series each)."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, counter: RequestCounter) -> None:
        self._counter = counter

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        status = FAULT_STATUS

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, noting_status)
        except HTTPException as exc:
            # Raised by a handler or a later middleware: answered further out.
            status = exc.status_code
            raise
        finally:
            route = str(scope.get("path_template", ""))
            self._counter.request_answered(str(scope.get("method", "")), route, status)


class UnmatchedRequests:
    """Count the answers given without a route, under UNMATCHED_ROUTE: the router's 404 and
    405, and the 401 of the auth gate, which runs before routing.

    A `before_send` hook of the app: no middleware sees these, as Litestar runs middleware
    only once a route matched (and then RequestMetrics counts the request).
    """

    def __init__(self, counter: RequestCounter) -> None:
        self._counter = counter

    async def __call__(self, message: Message, scope: Scope) -> None:
        # The scope's type says route_handler is always there; it is not before routing.
        if message["type"] == "http.response.start" and scope.get("route_handler") is None:
            method = str(scope.get("method", ""))
            self._counter.request_answered(
                method if method in HTTP_METHODS else OTHER_METHOD,
                UNMATCHED_ROUTE,
                message["status"],
            )


@get(METRICS_PATH, include_in_schema=False, summary="Prometheus metrics")
async def metrics(metrics_exposition: Injected[MetricsExposition]) -> Response[bytes]:
    body = await metrics_exposition.exposition()
    return Response(body, media_type=metrics_exposition.content_type)
