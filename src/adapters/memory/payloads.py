"""The simulator holds each message to nats-server's default max_payload, its headers
included, as JetStream does: what is too large for NATS is too large here."""

from __future__ import annotations

from collections.abc import Mapping

from adapters.wire import DEFAULT_MAX_PAYLOAD, EXPECTED_STREAM_HEADER, MSG_ID_HEADER, message_bytes
from domain.errors import PayloadTooLargeError


def require_within_max_payload(
    what: str, payload: bytes, headers: Mapping[str, str] | None = None
) -> None:
    """PayloadTooLargeError, worded as the NATS adapters word it, when over."""
    if message_bytes(payload, headers) > DEFAULT_MAX_PAYLOAD:
        raise PayloadTooLargeError(f"{what}: larger than the NATS server's max_payload")


def published_headers(
    headers: Mapping[str, str] | None, msg_id: str, stream: str
) -> dict[str, str]:
    """The headers of a JetStream publish to `stream` with `msg_id`, as the NATS adapters
    send them."""
    sent = {**(headers or {}), EXPECTED_STREAM_HEADER: stream}
    if msg_id:
        sent[MSG_ID_HEADER] = msg_id
    return sent
