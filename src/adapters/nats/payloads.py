"""What a message weighs against the NATS server's max_payload: its payload and its headers.

nats-py compares only the payload with max_payload. The server counts the header block too,
and answers a message past the limit with `-ERR 'Maximum Payload Violation'`, upon which
nats-py closes the connection for good: every request of the process fails from then on. So
the bridge weighs each message with headers before it sends it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import nats.errors
from nats.aio.client import Client as NatsClient

HEADER_BLOCK_BYTES: Final = len(b"NATS/1.0\r\n") + len(b"\r\n")
HEADER_LINE_BYTES: Final = len(b": \r\n")


def require_within_max_payload(
    nc: NatsClient, payload: bytes, headers: Mapping[str, str] | None
) -> None:
    """nats' MaxPayloadError (which `translated` makes a 413) when the message as nats-py
    writes it would be over the server's max_payload."""
    if len(payload) + header_bytes(headers) > nc.max_payload:
        raise nats.errors.MaxPayloadError


def header_bytes(headers: Mapping[str, str] | None) -> int:
    """The header block nats-py writes for `headers` (at most: it may drop newlines)."""
    if not headers:
        return 0
    lines = (
        len(key.strip().encode()) + len(value.strip().encode()) + HEADER_LINE_BYTES
        for key, value in headers.items()
        if key.strip()
    )
    return HEADER_BLOCK_BYTES + sum(lines)
