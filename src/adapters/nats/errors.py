"""NATS faults become domain errors here, and nowhere past this package."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise BackendUnavailableError when NATS cannot be reached, BackendError on other faults."""
    try:
        yield
    except nats.errors.MaxPayloadError as exc:
        raise PayloadTooLargeError(f"{what}: larger than the NATS server's max_payload") from exc
    except UNREACHABLE as exc:
        raise BackendUnavailableError(f"{what}: NATS unavailable ({type(exc).__name__})") from exc
    except nats.errors.Error as exc:
        raise BackendError(f"{what}: {exc}") from exc


def require_connected(nc: NatsClient, what: str) -> None:
    """Fail at once while NATS is away, instead of waiting out a request timeout: a poll
    must answer within its own time budget."""
    if not nc.is_connected:
        raise BackendUnavailableError(f"{what}: NATS unavailable (reconnecting)")
