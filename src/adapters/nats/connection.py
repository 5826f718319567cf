"""The bridge's NATS connection: reconnects forever, logs its state changes, and says when it
has reconnected. nats-py closes it for good on a protocol error the server answers (`-ERR`),
which the bridge avoids sending (adapters.nats.payloads); /healthz tells if it happens."""

from __future__ import annotations

import logging
import ssl
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs
import nats
import nats.errors
from nats.aio.client import Client as NatsClient

from adapters.nats.errors import translated

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S: Final = 5
RECONNECT_WAIT_S: Final = 1
PENDING_BYTES_WHILE_AWAY: Final = 8 * 1024 * 1024
_CLOSED_ON_PURPOSE: Final[weakref.WeakSet[NatsClient]] = weakref.WeakSet()
"""The clients `close` closed: those that close otherwise are lost."""


@attrs.frozen(kw_only=True)
class NatsOptions:
    servers: list[str]
    creds: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None


async def connect(options: NatsOptions, on_reconnected: Callable[[], None]) -> NatsClient:
    """Connect once (a failure is raised at start-up); after that, reconnect forever, and
    call `on_reconnected` after each reconnection."""

    client: NatsClient | None = None

    async def closed() -> None:
        lost = lost_for_good(client) if client is not None else None
        if lost is None:
            log.info("NATS connection closed")
        else:
            # nats-py never reconnects after this: /healthz answers 503 from now on.
            log.error("%s; restart the bridge", lost)

    async def reconnected() -> None:
        log.info("NATS reconnected")
        try:
            on_reconnected()
        except Exception:
            # Raised into nats-py, it would end its reconnection task, or count as a failed try.
            log.exception("after the NATS reconnection")

    with translated("connect to NATS"):
        client = await nats.connect(
            servers=options.servers,
            user_credentials=str(options.creds) if options.creds else None,
            tls=_tls_context(options),
            connect_timeout=CONNECT_TIMEOUT_S,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT_S,
            pending_size=PENDING_BYTES_WHILE_AWAY,
            error_cb=_on_error,
            disconnected_cb=_on_disconnected,
            reconnected_cb=reconnected,
            closed_cb=closed,
            name="dagnats-bridge",
        )
    return client


async def close(client: NatsClient) -> None:
    """Drain (let in-flight messages finish); while NATS is away that fails, so just close.
    Closed on purpose: not lost (`lost_for_good`)."""
    _CLOSED_ON_PURPOSE.add(client)
    try:
        await client.drain()
    except nats.errors.Error as exc:
        log.warning("NATS not drained (%s); closing", type(exc).__name__)
        await client.close()


def lost_for_good(client: NatsClient) -> str | None:
    """Why the connection is closed when the bridge did not close it (`close`): nats-py
    closes it, never to reconnect, on a protocol error the server answers (`-ERR`)."""
    if not client.is_closed or client in _CLOSED_ON_PURPOSE:
        return None
    cause = client.last_error
    return f"the NATS connection closed for good{f' ({cause})' if cause else ''}"


def _tls_context(options: NatsOptions) -> ssl.SSLContext | None:
    if not (options.tls_ca or options.tls_cert):
        return None
    context = ssl.create_default_context(cafile=str(options.tls_ca) if options.tls_ca else None)
    if options.tls_cert:
        key = str(options.tls_key) if options.tls_key else None
        context.load_cert_chain(str(options.tls_cert), key)
    return context


async def _on_error(exc: Exception) -> None:
    log.warning("NATS connection error: %s", exc)


async def _on_disconnected() -> None:
    log.warning("NATS disconnected")
