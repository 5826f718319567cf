"""TASK_QUEUES on JetStream: the work queue of task messages, one pull consumer per type."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import timedelta
from typing import TypeVar

import attrs
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from adapters.engine_publish import publish_as_the_engine
from adapters.nats.acks import settle
from adapters.nats.consumers import TypeConsumers
from adapters.nats.errors import require_connected, translated
from adapters.nats.jetstream import JetStream
from adapters.nats.jsapi import ACK, DEFAULT_ACK_WAIT_S, IN_PROGRESS, TERM, nak_body
from adapters.nats.pulls import TypePuller
from adapters.wire import CONSUMER_ACK_WAIT, MSG_ID_HEADER, TASK_STREAM, task_subject
from domain.errors import DomainError
from domain.models import Delivery, DeliveryHandle, RunId, TaskPayload, TaskType
from domain.services.flag import Flag

T = TypeVar("T")

JETSTREAM_HEADER_PREFIX = "Nats-"


@attrs.define
class _Arrivals:
    """Wakes every waiter taken before the next `notify`. Mutable on purpose: the generation."""

    _flag: Flag = attrs.field(init=False, factory=Flag)

    def waiter(self) -> asyncio.Future[None]:
        """Done at the next `notify`: watch it, do not cancel it (the waiters share it)."""
        return self._flag.future()

    def notify(self) -> None:
        self._flag.set()
        self._flag = Flag()


@attrs.define
class NatsTaskQueue:
    """TaskQueue and TaskPublisher over the JetStream work-queue stream `stream`.

    Each task type gets the durable consumer of PROTOCOL.md 4.1 on first use (adopted when it
    exists, created with `consumer_ack_wait` when absent) and a `TypePuller`, kept for the
    life of the queue; a pull that JetStream answers with a fault (a deleted consumer, or no
    responder) forgets both, so the next call looks the consumer up again. A 409 Leadership
    Change or Server Shutdown is no fault (see `pulls`).

    * `fetch` hands out messages already pulled for the type, then pulls with no wait for the
      rest of `max_messages`, never more; with nothing to hand out and time left, it waits as
      `wait_ready` does and tries again. (nats-py's `PullSubscription.fetch` does not fit: for
      a batch above one its lingering request waits for the full batch or the timeout, and it
      refuses a zero timeout.)
    * `wait_ready` keeps one waiting request of one message outstanding per type (shared by
      all waiters of the type); JetStream answers it as soon as a message becomes
      deliverable, the message is buffered for the next `fetch`, and the waiters wake. A
      message that nobody fetches within seconds is NAKed without delay (see `pulls`), which
      counts as a delivery: that is the price of waking at once on several types.
    * Deliveries carry the message's reply subject as their handle, so any connection can
      settle them; ack, nak, in_progress and term return once JetStream has applied them.
      Their headers are the message's own, without JetStream's `Nats-*` ones.

    Call `close` before closing the connection: it NAKs messages pulled but not handed out.
    Mutable on purpose: it holds the per-type consumers and pullers.
    """

    _nc: NatsClient
    _js: JetStream
    encode: Callable[[TaskPayload], bytes]
    decode: Callable[[bytes], TaskPayload]
    stream: str = attrs.field(default=TASK_STREAM, kw_only=True)
    consumer_ack_wait: timedelta = attrs.field(default=CONSUMER_ACK_WAIT, kw_only=True)
    _consumers: TypeConsumers = attrs.field(init=False)
    _pullers: dict[TaskType, TypePuller] = attrs.field(init=False, factory=dict)
    _adopting: asyncio.Lock = attrs.field(init=False, factory=asyncio.Lock)
    _arrivals: dict[TaskType, _Arrivals] = attrs.field(init=False, factory=dict)
    """Per type, so that a message wakes only the polls waiting on its type: with one for all
    types, 300 polls waiting on a quiet type cut a busy type's throughput fourfold."""

    @_consumers.default
    def _type_consumers(self) -> TypeConsumers:
        return TypeConsumers(self._nc, self._js, self.stream, self.consumer_ack_wait)

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
        """Publish any body on `task.<type>.<run_id>` and await the PubAck.

        A msg-id JetStream saw within the stream's duplicate window is dropped silently; an
        empty msg-id is never a duplicate.
        """
        subject = task_subject(task_type, run_id)
        outgoing = {**(headers or {}), **({MSG_ID_HEADER: msg_id} if msg_id else {})}
        with translated(f"publish task on {subject}"):
            await self._js.publish(subject, payload, stream=self.stream, headers=outgoing)

    async def fetch(
        self, task_type: TaskType, max_messages: int, timeout: timedelta
    ) -> list[Delivery]:
        require_connected(self._nc, f"fetch {task_type} tasks")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds()
        while True:
            puller = await self._puller(task_type)
            messages = await self._guarded(puller, puller.pull(max_messages))
            if messages or loop.time() >= deadline:
                return [self._delivery(task_type, puller, m) for m in messages]
            await self.wait_ready([task_type], timedelta(seconds=deadline - loop.time()))

    async def wait_ready(
        self,
        task_types: Sequence[TaskType],
        timeout: timedelta,
        *,
        until: Collection[asyncio.Future[None]] = (),
    ) -> None:
        require_connected(self._nc, "wait for tasks")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds()
        pullers = [await self._puller(t) for t in task_types]
        arrivals = [self._arrivals_of(t) for t in task_types]
        with contextlib.ExitStack() as waiting:
            for puller in pullers:
                waiting.enter_context(puller.waited_on(deadline))
            while not any(p.holding for p in pullers) and not any(s.done() for s in until):
                left = deadline - loop.time()
                if left <= 0:
                    return
                if faulted := [p for p in pullers if p.faulted]:
                    # Every waiter on it stops waiting (not only the one that would meet the
                    # fault), and the next fetch finds the type's consumer again.
                    for puller in faulted:
                        await self._forget(puller)
                    return
                # Taken before the requests go out, so an answer to them cannot be missed.
                arrived = {arrival.waiter() for arrival in arrivals}
                for puller in pullers:
                    await self._guarded(puller, puller.keep_waiting(left))
                await asyncio.wait(
                    {*arrived, *until}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )

    def reconnected(self) -> None:
        """Tell every puller that the connection reconnected: the server may have lost the
        pull requests sent before (a restarted server has), so the fetches waiting for their
        replies end and the waiting polls send their waiting requests again at once."""
        for puller in self._pullers.values():
            puller.reconnected()

    async def ack(self, handle: DeliveryHandle) -> None:
        await settle(self._js.inbox, handle, ACK, "ack message")

    async def nak(self, handle: DeliveryHandle, delay: timedelta) -> None:
        await settle(self._js.inbox, handle, nak_body(delay), "nak with delay")

    async def in_progress(self, handle: DeliveryHandle) -> None:
        await settle(self._js.inbox, handle, IN_PROGRESS, "in-progress")

    async def term(self, handle: DeliveryHandle) -> None:
        # The work-queue stream drops a termed message as it drops an acked one.
        await settle(self._js.inbox, handle, TERM, "term message")

    async def close(self) -> None:
        """Stop pulling and NAK, without delay, whatever was pulled but not handed out."""
        pullers, self._pullers = list(self._pullers.values()), {}
        for puller in pullers:
            await puller.close()

    async def _puller(self, task_type: TaskType) -> TypePuller:
        """The type's puller, adopting or creating its consumer on first use."""
        if (known := self._pullers.get(task_type)) is not None:
            return known
        async with self._adopting:
            if (known := self._pullers.get(task_type)) is not None:
                return known
            info = await self._consumers.ensure(task_type)
            puller = TypePuller(
                self._nc,
                self.stream,
                info.name,
                timedelta(seconds=info.config.ack_wait or DEFAULT_ACK_WAIT_S),
                self._arrivals_of(task_type).notify,
                settlements=self._js.inbox,
            )
            await puller.start()
            self._pullers[task_type] = puller
            return puller

    def _arrivals_of(self, task_type: TaskType) -> _Arrivals:
        if (known := self._arrivals.get(task_type)) is None:
            known = self._arrivals[task_type] = _Arrivals()
        return known

    async def _guarded(self, puller: TypePuller, call: Awaitable[T]) -> T:
        """Await `call`; once JetStream answered a pull with a fault, forget the puller.

        Its consumer may have been deleted or replaced: the next call looks it up again.
        """
        try:
            return await call
        except DomainError:
            if puller.faulted:
                await self._forget(puller)
            raise

    async def _forget(self, puller: TypePuller) -> None:
        """Drop a puller that met a fault, and close it, once whoever asks."""
        forgotten = [t for t, known in self._pullers.items() if known is puller]
        for task_type in forgotten:
            del self._pullers[task_type]
        if forgotten:
            await puller.close()

    def _delivery(self, task_type: TaskType, puller: TypePuller, msg: Msg) -> Delivery:
        try:
            task, problem = self.decode(msg.data), ""
        except Exception as exc:
            # Whatever the codec rejects is a malformed task; the poll consumes and logs it.
            task, problem = None, str(exc) or type(exc).__name__
        return Delivery(
            handle=DeliveryHandle(msg.reply),
            task_type=task_type,
            delivery_count=msg.metadata.num_delivered,
            ack_wait=puller.ack_wait,
            task=task,
            problem=problem,
            headers={
                key: value
                for key, value in (msg.headers or {}).items()
                if not key.startswith(JETSTREAM_HEADER_PREFIX)
            },
            sequence=msg.metadata.sequence.stream,
        )
