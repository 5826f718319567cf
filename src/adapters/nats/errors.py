"""NATS faults become domain errors here, and nowhere past this package."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise BackendUnavailableError when NATS cannot be reached, BackendError on other faults."""
    try:
        yield
    except nats.errors.MaxPayloadError as exc:
        raise PayloadTooLargeError(f"{what}: larger than the NATS server's max_payload") from exc
    except UNREACHABLE as exc:
        raise BackendUnavailableError(f"{what}: NATS unavailable ({type(exc).__name__})") from exc
    except nats.js.errors.APIError as exc:
        if exc.err_code in PASSING_API_ERRORS:
            raise BackendUnavailableError(f"{what}: NATS unavailable ({exc.description})") from exc
        raise BackendError(f"{what}: {exc}") from exc
    except nats.errors.Error as exc:
        raise BackendError(f"{what}: {exc}") from exc


def require_connected(nc: NatsClient, what: str) -> None:
    """Fail at once while NATS is away, instead of waiting out a request timeout: a poll
    must answer within its own time budget."""
    if not nc.is_connected:
        raise BackendUnavailableError(f"{what}: NATS unavailable (reconnecting)")
