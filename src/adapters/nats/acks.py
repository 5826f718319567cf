"""Settling a delivery by its handle: the reply subject JetStream gave it (`$JS.ACK.…`).

Any connection may publish to that subject, so a bridge replica, or this bridge after a
restart, can settle a delivery another connection pulled. Each settlement is a request:
JetStream answers once it has applied it, even for a delivery already settled, so the call
returns only when the settlement has taken effect and repeating it is harmless.
"""

from __future__ import annotations

from typing import Final

from adapters.nats.errors import require_connected, translated
from adapters.nats.inbox import Inbox

SETTLE_TIMEOUT_S: Final = 5.0


async def settle(inbox: Inbox, handle: str, body: bytes, what: str) -> None:
    """Send `body` (`+ACK`, `-NAK …`, `+WPI`, `+TERM`) for the delivery and await JetStream.

    A fault is raised as a domain error whose text starts with `what`.
    """
    require_connected(inbox.connection, what)
    with translated(what):
        await inbox.request(handle, body, timeout=SETTLE_TIMEOUT_S)
