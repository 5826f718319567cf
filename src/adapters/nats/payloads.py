"""What a message weighs against the NATS server's max_payload: its payload and its headers.

nats-py compares only the payload with max_payload. The server counts the header block too,
and answers a message past the limit with `-ERR 'Maximum Payload Violation'`, upon which
nats-py closes the connection for good: every request of the process fails from then on. So
the bridge weighs each message with headers before it sends it.
"""

from __future__ import annotations

from collections.abc import Mapping

import nats.errors
from nats.aio.client import Client as NatsClient

from adapters.wire import message_bytes


def require_within_max_payload(
    nc: NatsClient, payload: bytes, headers: Mapping[str, str] | None
) -> None:
    """nats' MaxPayloadError (which `translated` makes a 413) when the message as nats-py
    writes it would be over the server's max_payload."""
    if message_bytes(payload, headers) > nc.max_payload:
        raise nats.errors.MaxPayloadError
