"""NATS faults become domain errors here, and nowhere past this package."""

from __future__ import annotations

from contextlib import AbstractContextManager
from types import TracebackType
from typing import Final

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient

from domain.errors import BackendError, BackendUnavailableError, PayloadTooLargeError

UNREACHABLE: tuple[type[Exception], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.js.errors.ServiceUnavailableError,
    # A publish nobody answered: the stream has no leader (an election, a node lost).
    nats.js.errors.NoStreamResponseError,
)
PASSING_API_ERRORS: Final = frozenset({10008, 10009, 10118, 10119})
"""JetStream API errors a cluster gives while it moves leaders, whatever their HTTP-like
code: JetStream temporarily unavailable, a server that is not (or no longer) the leader,
a stream or a consumer offline while its replicas recover."""


def translated(what: str) -> AbstractContextManager[None]:
    """Raise BackendUnavailableError when NATS cannot be reached, BackendError on other faults."""
    return _Translation(what)


class _Translation:
    """`translated`'s context manager: a class, as it wraps every NATS call the bridge makes
    (about six a task), at a quarter of a generator-based one's cost."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None:
            _raise_translated(self.what, exc)


def _raise_translated(what: str, exc: BaseException) -> None:
    """The domain error for a NATS fault; nothing for anything else, which goes on as it is."""
    if isinstance(exc, nats.errors.MaxPayloadError):
        raise PayloadTooLargeError(f"{what}: larger than the NATS server's max_payload") from exc
    if isinstance(exc, UNREACHABLE):
        raise BackendUnavailableError(f"{what}: NATS unavailable ({type(exc).__name__})") from exc
    if isinstance(exc, nats.js.errors.APIError):
        if exc.err_code in PASSING_API_ERRORS:
            raise BackendUnavailableError(f"{what}: NATS unavailable ({exc.description})") from exc
        raise BackendError(f"{what}: {exc}") from exc
    if isinstance(exc, nats.errors.Error):
        raise BackendError(f"{what}: {exc}") from exc


def require_connected(nc: NatsClient, what: str) -> None:
    """Fail at once while NATS is away, instead of waiting out a request timeout: a poll
    must answer within its own time budget."""
    if not nc.is_connected:
        raise BackendUnavailableError(f"{what}: NATS unavailable (reconnecting)")
