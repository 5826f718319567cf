"""The outermost layer of each HTTP request: where its answer is counted, and where one cut
by the drain is answered.

One layer notes the answer's status as it starts, once per request, and with it:
* counts the request by its route template (never the raw path: task ids would make a
  series each), or as UNMATCHED_ROUTE when no route took it (the router's 404 and 405, the
  auth gate's 401); a request that got no answer counts as a 500;
* answers a request the server cuts when the drain's grace ends (app.draining). uvicorn
  cancels what is still in flight then, answers 500 in plain text and logs the cancellation
  as an error with its stack trace. A cut request gets instead what a request refused while
  draining gets: 503 problem+json with Retry-After, so that the client retries elsewhere
  (a resolve is idempotent; a poll repeats with its poll_id), and one warning line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import attrs
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from adapters.http.metrics import HTTP_METHODS, OTHER_METHOD, UNMATCHED_ROUTE, RequestCounter
from adapters.http.problems import problem, send_outside_a_route
from adapters.http.routes import DRAINING_RETRY_AFTER
from domain.services.drain import Drain

log = logging.getLogger(__name__)

UNANSWERED_STATUS: Final = 500
CUT_DETAIL = (
    "the bridge stopped before it answered this request, which may or may not have taken "
    "effect: retry it on another replica"
)


@attrs.frozen
class RequestBoundary:
    """The ASGI app `app` with its HTTP requests counted into `counter` and, once the drain
    has begun, those cancelled answered as above. Nothing else cancels a request: uvicorn
    tells a departed client by a message."""

    app: ASGIApp
    counter: RequestCounter
    drain: Drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        status: int | None = None

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting_status)
        except asyncio.CancelledError:
            if not self.drain.begun:
                raise
            log.warning(
                "%s %s cut: the drain's grace ended before it was answered",
                scope["method"],
                scope["path"],
            )
            # Not raised again: the server only wanted the request over, and would log the
            # cancellation with its stack trace.
            if status is None:
                headers = {"Retry-After": DRAINING_RETRY_AFTER, "Connection": "close"}
                cut = problem(503, CUT_DETAIL, headers=headers)
                await send_outside_a_route(cut, scope, receive, noting_status)
        finally:
            self._count(scope, UNANSWERED_STATUS if status is None else status)

    def _count(self, scope: Scope, status: int) -> None:
        # The router sets route_handler and path_template in the scope when a route matched.
        routed = scope.get("route_handler") is not None
        route = str(scope.get("path_template", "")) if routed else UNMATCHED_ROUTE
        method = str(scope.get("method", ""))
        self.counter.request_answered(
            method if method in HTTP_METHODS else OTHER_METHOD, route, status
        )
