"""Bearer-token auth on every /v1/ route, compared in constant time."""

from __future__ import annotations

import hmac

from litestar.exceptions import NotAuthorizedException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

PROTECTED_PREFIX = "/v1/"


class BearerAuth(ASGIMiddleware):
    """Refuse a /v1/ request unless it carries `Authorization: Bearer <token>`.

    The scheme is case-sensitive and separated by one space, as in the Go bridge.
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if scope["path"].startswith(PROTECTED_PREFIX) and not self._authorised(scope):
            raise NotAuthorizedException("unauthorized")
        await next_app(scope, receive, send)

    def _authorised(self, scope: Scope) -> bool:
        sent = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        return hmac.compare_digest(sent, self._expected)
