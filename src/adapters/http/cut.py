"""The answer to a request the server cuts when the drain's grace ends (app.draining).

uvicorn cancels what is still in flight then, answers 500 in plain text and logs the
cancellation as an error with its stack trace. A cut request gets instead what a request
refused while draining gets: 503 problem+json with Retry-After, so that the client retries
elsewhere (a resolve is idempotent; a poll repeats with its poll_id), and one warning line.
"""

from __future__ import annotations

import asyncio
import logging

import attrs
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from adapters.http.problems import problem, send_outside_a_route
from adapters.http.routes import DRAINING_RETRY_AFTER
from domain.services.drain import Drain

log = logging.getLogger(__name__)

CUT_DETAIL = (
    "the bridge stopped before it answered this request, which may or may not have taken "
    "effect: retry it on another replica"
)


@attrs.frozen
class AnswerCutRequests:
    """The ASGI app `app`, whose HTTP requests cancelled once the drain has begun are answered
    as above. Nothing else cancels a request: uvicorn tells a departed client by a message."""

    app: ASGIApp
    drain: Drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started = False

        async def noting_start(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, noting_start)
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
            if not started:
                headers = {"Retry-After": DRAINING_RETRY_AFTER, "Connection": "close"}
                cut = problem(503, CUT_DETAIL, headers=headers)
                await send_outside_a_route(cut, scope, receive, send)
