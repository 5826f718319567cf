"""`GET /metrics`, and the labels the HTTP requests are counted under (by
adapters.http.boundary, per route template and status)."""

from __future__ import annotations

from typing import Final, Protocol

from litestar import Response, get

from adapters.http.deps import Injected

METRICS_PATH = "/metrics"
UNMATCHED_ROUTE: Final = "unmatched"
"""The route label of a request that no route matched: one series, whatever its path."""
HTTP_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
OTHER_METHOD: Final = "other"
"""The method label of a request whose method is not one of HTTP_METHODS (a client may
send any token there; no route takes it)."""


class RequestCounter(Protocol):
    def request_answered(self, method: str, route: str, status: int) -> None: ...


class MetricsExposition(Protocol):
    @property
    def content_type(self) -> str: ...

    async def exposition(self) -> bytes: ...


@get(METRICS_PATH, include_in_schema=False, summary="Prometheus metrics")
async def metrics(metrics_exposition: Injected[MetricsExposition]) -> Response[bytes]:
    body = await metrics_exposition.exposition()
    return Response(body, media_type=metrics_exposition.content_type)
