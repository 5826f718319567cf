"""WORKFLOW_HISTORY on JetStream: the engine's event log, deduplicated on Nats-Msg-Id."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import attrs
import nats.js.errors
from nats.js import api
from nats.js.client import JetStreamContext

from adapters.nats.errors import translated
from adapters.nats.jsapi import NO_MESSAGE_FOUND
from adapters.wire import HISTORY_STREAM, MSG_ID_HEADER, history_subject
from domain.errors import BackendError
from domain.models import Event, OutboundEvent, RunId


@attrs.frozen
class NatsEventLog:
    """EventLog: events go to `history.<run_id>` as the codec encodes them (PROTOCOL.md 1.4).

    `append` sends `Nats-Msg-Id` (the event's msg-id; none when it is empty, which is then
    never a duplicate) and the outbound trace headers, and returns once JetStream has stored
    the event, or reported it a duplicate within the stream's duplicate window (5 s on
    WORKFLOW_HISTORY). `read` and `contains` walk the run's subject with
    "next message by subject" gets, one per event, which works on any stream configuration
    (direct gets need `allow_direct`) and ends at the first "no message found".
    """

    _js: JetStreamContext
    encode: Callable[[Event], bytes]
    decode: Callable[[bytes], Event]
    stream: str = attrs.field(default=HISTORY_STREAM, kw_only=True)

    async def append(self, outbound: OutboundEvent) -> bool:
        subject = history_subject(outbound.event.run_id)
        msg_id = {MSG_ID_HEADER: outbound.msg_id} if outbound.msg_id else {}
        headers = {**outbound.headers, **msg_id}
        with translated(f"publish {outbound.event.type} on {subject}"):
            ack: api.PubAck = await self._js.publish(
                subject, self.encode(outbound.event), stream=self.stream, headers=headers
            )
        return not ack.duplicate

    async def read(self, run_id: RunId) -> list[Event]:
        return [self._event(message) async for message in self._messages(run_id)]

    async def contains(self, run_id: RunId, msg_id: str) -> bool:
        """Walks the run's history as `read` does, comparing each message's `Nats-Msg-Id`."""
        async for message in self._messages(run_id):
            if (message.headers or {}).get(MSG_ID_HEADER) == msg_id:
                return True
        return False

    async def _messages(self, run_id: RunId) -> AsyncIterator[api.RawStreamMsg]:
        subject = history_subject(run_id)
        seq = 1
        while (message := await self._next(subject, seq)) is not None:
            yield message
            seq = (message.seq or seq) + 1

    async def _next(self, subject: str, seq: int) -> api.RawStreamMsg | None:
        """The first message on `subject` at or after `seq`; None when there is none."""
        with translated(f"read {subject} from {self.stream}"):
            try:
                message: api.RawStreamMsg = await self._js.get_msg(
                    self.stream, seq=seq, subject=subject, next=True
                )
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code == NO_MESSAGE_FOUND:
                    return None
                raise
        return message

    def _event(self, message: api.RawStreamMsg) -> Event:
        try:
            return self.decode(message.data or b"")
        except ValueError as exc:
            raise BackendError(
                f"message {message.seq} on {message.subject} is not an event: {exc}"
            ) from exc
