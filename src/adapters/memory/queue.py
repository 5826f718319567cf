"""The TASK_QUEUES work-queue stream and its per-type pull consumers, in memory.

Models what the bridge relies on in JetStream: explicit acks, deliver-all consumers created on
first use, AckWait expiry and redelivery, NAK delays, in-progress extension, a msg-id duplicate
window, and at most one consumer per overlapping filter. All time is the injected clock's.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Final

import attrs

from adapters.engine_publish import publish_as_the_engine
from adapters.memory.dedup import DuplicateWindow
from adapters.memory.payloads import published_headers, require_within_max_payload
from adapters.memory.waiting import Broadcast, wait_or_timeout
from adapters.wire import (
    CONSUMER_ACK_WAIT,
    CONSUMER_MAX_ACK_PENDING,
    TASK_STREAM,
    consumer_filter,
    consumer_name,
    filters_overlap,
    name_conflict,
    overlap_conflict,
    subject_matches,
    task_subject,
)
from domain.errors import ConsumerConflictError
from domain.models import Delivery, DeliveryHandle, RunId, TaskPayload, TaskType
from domain.ports import Clock

DUPLICATE_WINDOW: Final = timedelta(minutes=2)
"""JetStream's default duplicate window, which TASK_QUEUES keeps."""


class MessageState(enum.Enum):
    AVAILABLE = "available"
    """Deliverable now: never delivered, NAKed without delay, or its AckWait has passed."""
    PENDING = "pending"
    """Delivered and waiting for a settlement within its AckWait."""
    DELAYED = "delayed"
    """NAKed with a delay that has not passed yet."""


@attrs.frozen(kw_only=True)
class QueuedMessage:
    """A stored message as the simulator and tests inspect it."""

    seq: int
    subject: str
    delivery_count: int
    state: MessageState


@attrs.define(kw_only=True)
class _Message:
    """Mutable on purpose: deliveries and settlements change it in place."""

    seq: int
    subject: str
    payload: bytes
    headers: dict[str, str]
    delivery_count: int = 0
    due: datetime
    """When it becomes deliverable: its publish time, NAK delay end, or AckWait end."""
    nakked: bool = False
    holder: _Consumer | None = None
    """The consumer that delivered it, once one has: it counts against that one's
    MaxAckPending until it is acked or termed."""


@attrs.define
class _Consumer:
    """Mutable on purpose: it counts its deliveries not settled yet."""

    name: str
    subject_filter: str
    task_type: TaskType
    unsettled: int = 0


@attrs.define
class MemoryTaskQueue:
    """TaskQueue and TaskPublisher over one in-memory work-queue stream.

    Messages are stored as bytes, as on the wire: `encode` and `decode` are the codec's,
    injected by the composition root. A body `decode` rejects is delivered with `task=None`
    and the reason in `problem`. Mutable on purpose: it is the stream.
    """

    clock: Clock
    decode: Callable[[bytes], TaskPayload]
    encode: Callable[[TaskPayload], bytes] = attrs.field(kw_only=True)
    ack_wait: timedelta = attrs.field(default=CONSUMER_ACK_WAIT, kw_only=True)
    stream: str = attrs.field(default=TASK_STREAM, kw_only=True)
    _messages: dict[int, _Message] = attrs.field(init=False, factory=dict)
    _consumers: dict[str, _Consumer] = attrs.field(init=False, factory=dict)
    _seqs: itertools.count[int] = attrs.field(init=False, factory=lambda: itertools.count(1))
    _changes: Broadcast[None] = attrs.field(init=False, factory=Broadcast)
    _duplicates: DuplicateWindow = attrs.field(init=False)

    @_duplicates.default
    def _duplicate_window(self) -> DuplicateWindow:
        return DuplicateWindow(self.clock, DUPLICATE_WINDOW)

    async def publish_task(self, task_type: TaskType, task: TaskPayload, *, msg_id: str) -> None:
        await publish_as_the_engine(self, task_type, task, msg_id=msg_id)

    async def publish_raw(
        self,
        task_type: TaskType,
        payload: bytes,
        *,
        run_id: RunId,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Store any body on `task.<type>.<run_id>`, as any NATS client could publish it.

        A msg-id seen within the last 2 minutes is dropped.
        """
        subject = task_subject(task_type, run_id)
        weighed = published_headers(headers, msg_id, self.stream)
        require_within_max_payload(f"publish task on {subject}", payload, weighed)
        if not self._duplicates.admit(msg_id):
            return
        seq = next(self._seqs)
        self._messages[seq] = _Message(
            seq=seq,
            subject=subject,
            payload=payload,
            headers=dict(headers or {}),
            due=self.clock.now(),
        )
        self._changes.notify(None)

    async def fetch(
        self, task_type: TaskType, max_messages: int, timeout: timedelta
    ) -> list[Delivery]:
        consumer = self._consumer(task_type)
        deadline = self.clock.now() + timeout
        while not (deliveries := self._deliver(consumer, max_messages)):
            if not await self._wait_for_change([consumer.subject_filter], deadline):
                break
        return deliveries

    async def wait_ready(
        self,
        task_types: Sequence[TaskType],
        timeout: timedelta,
        *,
        until: Collection[asyncio.Future[None]] = (),
    ) -> None:
        consumers = [self._consumer(t) for t in task_types]
        filters = [c.subject_filter for c in consumers]
        deadline = self.clock.now() + timeout
        while not any(self._deliverable(consumers)) and not any(s.done() for s in until):
            if not await self._wait_for_change(filters, deadline, until):
                return

    async def ack(self, handle: DeliveryHandle) -> None:
        if (message := self._current(handle)) is not None:
            del self._messages[message.seq]
            if (consumer := message.holder) is not None:
                consumer.unsettled -= 1
                if consumer.unsettled == CONSUMER_MAX_ACK_PENDING - 1:
                    self._changes.notify(None)  # its new messages are deliverable again

    async def term(self, handle: DeliveryHandle) -> None:
        # A work-queue stream drops a termed message just as an acked one.
        await self.ack(handle)

    async def nak(self, handle: DeliveryHandle, delay: timedelta) -> None:
        if (message := self._current(handle)) is not None:
            message.due = self.clock.now() + max(delay, timedelta(0))
            message.nakked = True
            self._changes.notify(None)

    async def in_progress(self, handle: DeliveryHandle) -> None:
        """Restarts AckWait of a delivery still pending; once AckWait has passed, the message
        is handed out again all the same, as JetStream does."""
        message = self._current(handle)
        now = self.clock.now()
        # Known difference: JetStream would let +WPI after a NAK restart AckWait over the delay.
        if message is not None and not message.nakked and message.due > now:
            message.due = now + self.ack_wait

    def messages(self) -> list[QueuedMessage]:
        """The stream's messages in stream order (acked and termed ones are gone)."""
        now = self.clock.now()
        return [
            QueuedMessage(
                seq=m.seq,
                subject=m.subject,
                delivery_count=m.delivery_count,
                state=_state(m, now),
            )
            for m in self._messages.values()
        ]

    def _consumer(self, task_type: TaskType) -> _Consumer:
        """The type's durable consumer, created on first use (deliver all, explicit ack)."""
        name, wanted = consumer_name(task_type), consumer_filter(task_type)
        existing = self._consumers.get(name)
        if existing is not None:
            if existing.subject_filter != wanted:
                raise ConsumerConflictError(name_conflict(name, existing.subject_filter, wanted))
            return existing
        for other in self._consumers.values():
            # A work-queue stream allows one consumer per overlapping filter (JetStream 10100).
            if filters_overlap(other.subject_filter, wanted):
                raise ConsumerConflictError(overlap_conflict(name, wanted, other.subject_filter))
        created = _Consumer(name, wanted, task_type)
        self._consumers[name] = created
        return created

    def _matching(self, filters: Sequence[str]) -> Iterator[_Message]:
        return (
            m
            for m in self._messages.values()
            if any(subject_matches(f, m.subject) for f in filters)
        )

    def _deliverable(self, consumers: Sequence[_Consumer]) -> Iterator[_Message]:
        """The consumers' messages that are due, in stream order; a consumer's new ones only
        while fewer than CONSUMER_MAX_ACK_PENDING of its deliveries are unsettled (those it
        has delivered already come again all the same, as on JetStream)."""
        # Known difference: JetStream serves redeliveries before new messages; this is stream order.
        now = self.clock.now()
        room = {c.name: CONSUMER_MAX_ACK_PENDING - c.unsettled for c in consumers}
        for message in self._messages.values():
            consumer = next(
                (c for c in consumers if subject_matches(c.subject_filter, message.subject)), None
            )
            if consumer is None or message.due > now:
                continue
            if message.holder is None:
                if room[consumer.name] <= 0:
                    continue
                room[consumer.name] -= 1
            yield message

    def _deliver(self, consumer: _Consumer, max_messages: int) -> list[Delivery]:
        ready = list(itertools.islice(self._deliverable([consumer]), max_messages))
        return [self._delivery(consumer, message) for message in ready]

    def _delivery(self, consumer: _Consumer, message: _Message) -> Delivery:
        if message.holder is None:
            message.holder = consumer
            consumer.unsettled += 1
        message.delivery_count += 1
        message.due = self.clock.now() + self.ack_wait
        message.nakked = False
        try:
            task, problem = self.decode(message.payload), ""
        except Exception as exc:
            # Whatever the codec rejects is a malformed task; the poll consumes and logs it.
            task, problem = None, str(exc) or type(exc).__name__
        return Delivery(
            handle=DeliveryHandle(f"{self.stream}:{message.seq}:{message.delivery_count}"),
            task_type=consumer.task_type,
            delivery_count=message.delivery_count,
            ack_wait=self.ack_wait,
            task=task,
            problem=problem,
            headers=dict(message.headers),
            sequence=message.seq,
        )

    def _current(self, handle: DeliveryHandle) -> _Message | None:
        """The message if `handle` is its latest delivery; settling anything else is a no-op.

        Known difference: JetStream settles by stream sequence, so there a stale handle would
        settle the newer delivery; here it is ignored, which fences an outdated holder.
        """
        stream, seq, count = handle.rsplit(":", 2)
        message = self._messages.get(int(seq))
        if stream != self.stream or message is None or message.delivery_count != int(count):
            return None
        return message

    async def _wait_for_change(
        self,
        filters: Sequence[str],
        deadline: datetime,
        until: Collection[asyncio.Future[None]] = (),
    ) -> bool:
        """Wait for a publish or NAK, until the next of these messages falls due, or for one
        of `until` to be done.

        False once the deadline has passed.
        """
        now = self.clock.now()
        if now >= deadline:
            return False
        wake = min([deadline, *(m.due for m in self._matching(filters) if m.due > now)])
        await wait_or_timeout(self.clock, self._changes.waiter(), wake - now, until=until)
        return True


def _state(message: _Message, now: datetime) -> MessageState:
    if message.due <= now:
        return MessageState.AVAILABLE
    return MessageState.DELAYED if message.nakked else MessageState.PENDING
