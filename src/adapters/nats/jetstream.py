"""JetStream publishes and KV reads at about half nats-py's own cost in this process.

nats-py's `JetStreamContext.publish` sends each publish through `Client.request` and parses
the PubAck with `json` into a dataclass. `JetStream.publish` keeps the same contract, wire
and errors, and sends through an `Inbox` and decodes with msgspec: on loopback, 27 -> 15 µs
of CPU per publish. A task costs five publishes (its lease put, step.started, the lease's
claim, its terminal event, the lease settled): the KV writes of nats-py's `KeyValue`
publish through this `publish` too. Its reads of a subject's last message go through the
`Inbox` as well: a direct get, and a lease's (its bucket has no direct gets), a message get
of the stream API decoded by msgspec: a lease read costs 43-45 µs of CPU where nats-py's
`json`, base64 and e-mail header parser made it 74-96. `get_last_msgs` reads the last
message of many subjects with one request (the checkpoints of a poll's tasks).
"""

from __future__ import annotations

from typing import Any, Final

import attrs
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.manager import JetStreamManager, _validate_stream_name

from adapters.nats.inbox import Inbox
from adapters.nats.jsapi import (
    DESCRIPTION_HEADER,
    END_OF_BATCH,
    NO_MESSAGES,
    NUM_PENDING_HEADER,
    SEQUENCE_HEADER,
    STATUS_HEADER,
)

DEFAULT_TIMEOUT_S: Final = 5.0
"""nats-py's default for a JetStream context."""


class _PubAck(msgspec.Struct):
    """What JetStream answers a publish: the stored message's place, or an API error."""

    stream: str = ""
    seq: int = 0
    domain: str | None = None
    duplicate: bool | None = None
    val: str | None = None
    """A counter stream's value (ADR-49)."""
    batch: str | None = None
    count: int | None = None
    """An atomic batch's id and size (ADR-50), which nats-py names batch_id and batch_size."""
    error: dict[str, Any] | None = None


class JetStream(JetStreamContext):
    """nats-py's JetStream context, whose publishes await their PubAck on an `Inbox`."""

    def __init__(self, conn: NatsClient, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        super().__init__(conn, timeout=timeout)
        self.inbox = Inbox(conn)
        """Where the PubAcks come back; also for other requests on the connection."""

    async def publish(  # noqa: PLR0913, PLR0917 - JetStreamContext.publish's signature
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float | None = None,
        stream: str | None = None,
        headers: dict[str, Any] | None = None,
        msg_ttl: float | None = None,
    ) -> api.PubAck:
        """As nats-py's: NoStreamResponseError when no stream takes `subject`, the API error
        JetStream answers (APIError and its kinds), nats' TimeoutError after `timeout`."""
        outgoing = dict(headers or {})
        if stream is not None:
            outgoing[api.Header.EXPECTED_STREAM] = stream
        if msg_ttl is not None:
            outgoing[api.Header.MSG_TTL] = str(int(msg_ttl))
        try:
            reply = await self.inbox.request(
                subject,
                payload,
                timeout=self._timeout if timeout is None else timeout,
                headers=outgoing or None,
            )
        except nats.errors.NoRespondersError:
            raise nats.js.errors.NoStreamResponseError from None
        ack = msgspec.json.decode(reply.data, type=_PubAck)
        if ack.error is not None:
            raise nats.js.errors.APIError.from_error(ack.error)
        return api.PubAck(
            stream=ack.stream,
            seq=ack.seq,
            domain=ack.domain,
            duplicate=ack.duplicate,
            batch_id=ack.batch,
            batch_size=ack.count,
            val=ack.val,
        )

    async def get_msg(
        self,
        stream_name: str,
        seq: int | None = None,
        subject: str | None = None,
        direct: bool | None = False,
        next: bool | None = False,
    ) -> api.RawStreamMsg:
        """As nats-py's; a read of `subject`'s last message goes through the `Inbox`, every
        other kind through nats-py."""
        if not (subject and seq is None and not next):
            return await super().get_msg(stream_name, seq, subject, direct, next)
        _validate_stream_name(stream_name)
        if direct:
            reply = await self.inbox.request(
                f"{self._prefix}.DIRECT.GET.{stream_name}.{subject}", b"", timeout=self._timeout
            )
            return JetStreamManager._lift_msg_to_raw_msg(reply)
        try:
            reply = await self.inbox.request(
                f"{self._prefix}.STREAM.MSG.GET.{stream_name}",
                msgspec.json.encode({"last_by_subj": subject}),
                timeout=self._timeout,
            )
        except nats.errors.NoRespondersError:
            raise nats.js.errors.ServiceUnavailableError from None
        return _stored_message(msgspec.json.decode(reply.data, type=_MessageGetAnswer))

    async def get_last_msgs(self, stream_name: str, subjects: list[str]) -> LastMessages:
        """The last message of each of `subjects` that has one, in stream order, from one
        batched direct get (nats-server 2.11 and later; the stream must allow direct gets).
        The API error JetStream answers (APIError and its kinds), ServiceUnavailableError
        when nobody answers, nats' TimeoutError after the context's timeout."""
        _validate_stream_name(stream_name)
        try:
            replies = await self.inbox.request_many(
                f"{self._prefix}.DIRECT.GET.{stream_name}",
                msgspec.json.encode({"multi_last": subjects}),
                timeout=self._timeout,
                last=_ends_batch,
            )
        except nats.errors.NoRespondersError:
            raise nats.js.errors.ServiceUnavailableError from None
        *found, end = replies
        headers = end.headers or {}
        status = headers.get(STATUS_HEADER, "")
        if status == NO_MESSAGES:
            return LastMessages([], left_out=0)
        if status != END_OF_BATCH:
            code = int(status) if status.isdigit() else None
            raise nats.js.errors.APIError(code=code, description=headers.get(DESCRIPTION_HEADER))
        messages = [JetStreamManager._lift_msg_to_raw_msg(msg) for msg in found]
        return LastMessages(messages, left_out=int(headers.get(NUM_PENDING_HEADER) or 0))


@attrs.frozen
class LastMessages:
    """What a batched direct get sent: the messages, and how many it left out (it stops once
    it has sent the server's `max_pending` bytes, 64 MB by default)."""

    messages: list[api.RawStreamMsg]
    left_out: int


def _ends_batch(msg: Msg) -> bool:
    """A status from the server ends a batched direct get: its end, no results, or an
    error. A stored message has a sequence, whatever headers its publisher gave it."""
    headers = msg.headers
    return headers is not None and STATUS_HEADER in headers and SEQUENCE_HEADER not in headers


class _StoredMessage(msgspec.Struct):
    """A message as the stream API's message get answers it; msgspec reads the base64."""

    subject: str
    seq: int
    time: str
    hdrs: bytes = b""
    data: bytes = b""


class _MessageGetAnswer(msgspec.Struct):
    message: _StoredMessage | None = None
    error: dict[str, Any] | None = None


def _stored_message(answer: _MessageGetAnswer) -> api.RawStreamMsg:
    """The message as nats-py's non-direct get gives it (no data is None, and so are no
    headers), but for `hdrs`, nats-py's base64 text of the headers, which is left None."""
    if answer.error is not None:
        raise nats.js.errors.APIError.from_error(answer.error)
    if answer.message is None:
        raise nats.js.errors.APIError(description="message get answered without a message")
    message = answer.message
    return api.RawStreamMsg(
        subject=message.subject,
        seq=message.seq,
        data=message.data or None,
        headers=_header_block(message.hdrs),
        time=api.Base._parse_utc_iso(message.time),
    )


def _header_block(block: bytes) -> dict[str, str] | None:
    """`NATS/1.0` then a `Name: value` line each, as a dict; None when there is none."""
    fields = (line.partition(":") for line in block.decode(errors="replace").split("\r\n")[1:])
    headers = {name.strip(): value.strip() for name, colon, value in fields if colon}
    return headers or None
