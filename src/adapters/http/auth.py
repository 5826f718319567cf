"""Bearer-token auth on every /v1/ route, against a set of named tokens (adapters.tokens)."""

from __future__ import annotations

import logging
from typing import Final
from urllib.parse import unquote

import attrs
from litestar import Response
from litestar.types import HTTPScope

from adapters.http.problems import problem
from adapters.tokens import Tokens

log = logging.getLogger(__name__)

PROTECTED_SEGMENT: Final = "v1"
"""The first path segment of the routes that need a token."""
TOKEN_NAME_STATE: Final = "token_name"  # noqa: S105 - a key, not a token
"""Where an accepted request's token name is kept in the ASGI scope's `state`."""


@attrs.frozen
class BearerAuth:
    """The check of a request's token, made before routing (see `check`): an unauthenticated
    client learns nothing of the routes, not even which exist. Accepts only
    `Authorization: Bearer <token>` with one of the tokens; the scheme is case-sensitive and
    separated by one space, as in the Go bridge.
    """

    tokens: Tokens
    protected: frozenset[str] = frozenset({PROTECTED_SEGMENT})
    """First path segments (lower case) that need a token."""

    def check(self, scope: HTTPScope) -> Response[bytes] | None:
        """The 401 answer, None when the request is unprotected or carries a token; an
        accepted request's token name goes in the scope's state (TOKEN_NAME_STATE)."""
        if not self.protects(scope["path"]):
            return None
        sent = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        token_name = self.tokens.name_of(sent)
        if token_name is None:
            return problem(401, "unauthorized")
        scope.setdefault("state", {})[TOKEN_NAME_STATE] = token_name
        log.debug(
            "%s %s with token %s",
            scope["method"],
            scope["path"],
            token_name,
            extra={TOKEN_NAME_STATE: token_name},
        )
        return None

    def protects(self, path: str) -> bool:
        """Whether the path needs a token, judged as the router reads it, which skips empty
        segments (`//v1//workers` routes as `/v1/workers`); decoded once more and without
        case, so that no spelling of a protected path gets through unchecked."""
        segments = [segment for segment in unquote(path).split("/") if segment]
        return bool(segments) and segments[0].lower() in self.protected
