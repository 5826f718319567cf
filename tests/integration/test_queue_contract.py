"""One spec, two backends: MemoryTaskQueue and NatsTaskQueue must agree on these scenarios.

Both run on real time (the memory queue on the system clock) with a 1 s AckWait. Known
differences, named in the memory queue's comments, are left out on purpose:

* settling a superseded delivery: memory ignores it; JetStream settles by stream sequence;
* order: JetStream serves redeliveries before new messages; memory serves stream order;
* `in_progress` after a NAK: JetStream restarts AckWait over the NAK delay; memory does not;
* duplicate window expiry (2 min) is not waited for here;
* NATS only: a message pulled for `wait_ready` that nobody fetches within seconds is NAKed,
  so its next delivery counts one more (tested in test_nats_queue.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from datetime import timedelta
from typing import Final, Protocol

import attrs
import nats
import pytest

from adapters.codec import encode
from adapters.memory.clock import SystemClock
from adapters.memory.queue import MemoryTaskQueue
from adapters.wire import (
    CONSUMER_MAX_ACK_PENDING,
    consumer_filter,
    consumer_name,
    name_conflict,
    overlap_conflict,
)
from app.embedded import EmbeddedNats
from domain.errors import ConsumerConflictError
from domain.models import Delivery, RunId, StepId, TaskPayload, TaskType
from domain.ports import TaskPublisher, TaskQueue
from domain.services.flag import Flag
from tests.integration.jetstream import decode_task, task_queue, task_stream, unique

pytestmark = pytest.mark.integration

ACK_WAIT: Final = timedelta(seconds=1)
NO_WAIT: Final = timedelta(0)
LONG_ENOUGH: Final = timedelta(seconds=5)
"""A timeout that a passing test never reaches."""
PROMPT_S: Final = 0.5
"""How soon "at once" is, with slack for a loaded machine."""


class ContractQueue(TaskQueue, TaskPublisher, Protocol):
    async def publish_raw(
        self,
        task_type: TaskType,
        payload: bytes,
        *,
        run_id: RunId,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None: ...


@attrs.frozen
class Backend:
    queue: ContractQueue
    prefix: str
    """Every task type of a test starts with it (the NATS stream captures only those)."""

    @property
    def run_id(self) -> RunId:
        """The test's run: msg-ids with it never meet another test's in the duplicate window."""
        return RunId(f"run-{self.prefix}")

    def type(self, suffix: str = "email") -> TaskType:
        return TaskType(f"{self.prefix}.{suffix}")


@pytest.fixture(params=["memory", "nats"])
async def backend(
    request: pytest.FixtureRequest, nats_server: EmbeddedNats
) -> AsyncIterator[Backend]:
    if request.param == "memory":
        memory = MemoryTaskQueue(SystemClock(), decode_task, encode=encode, ack_wait=ACK_WAIT)
        yield Backend(memory, unique("q"))
        return
    client = await nats.connect(nats_server.url)
    try:
        async with (
            task_stream(client.jetstream()) as stream,
            task_queue(client, stream, ACK_WAIT) as queue,
        ):
            yield Backend(queue, stream.prefix)
    finally:
        await client.close()


async def publish(backend: Backend, step: str, suffix: str = "email", msg_id: str = "") -> None:
    task = TaskPayload(run_id=backend.run_id, step_id=StepId(step))
    msg_id = msg_id or f"{backend.run_id}.{step}.queued"
    await backend.queue.publish_task(backend.type(suffix), task, msg_id=msg_id)


async def fetch_one(backend: Backend, suffix: str = "email") -> Delivery:
    [delivery] = await backend.queue.fetch(backend.type(suffix), 1, LONG_ENOUGH)
    return delivery


def steps(deliveries: list[Delivery]) -> list[str]:
    return [d.task.step_id for d in deliveries if d.task is not None]


async def test_a_delivery_carries_the_decoded_task_and_its_settlement_facts(
    backend: Backend,
) -> None:
    await publish(backend, "s1")

    delivery = await fetch_one(backend)

    assert delivery.task == TaskPayload(run_id=backend.run_id, step_id=StepId("s1"))
    assert delivery.task_type == backend.type()
    assert delivery.delivery_count == 1
    assert delivery.ack_wait == ACK_WAIT
    assert delivery.headers == {}
    assert delivery.problem == ""


async def test_a_raw_publish_delivers_its_headers(backend: Backend) -> None:
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    body = b'{"run_id": "r", "step_id": "s"}'
    await backend.queue.publish_raw(
        backend.type(),
        body,
        run_id=backend.run_id,
        msg_id=f"{backend.run_id}.s.queued",
        headers=headers,
    )

    delivery = await fetch_one(backend)

    assert delivery.headers == headers
    assert delivery.task == TaskPayload(run_id=RunId("r"), step_id=StepId("s"))


async def test_an_undecodable_body_is_delivered_with_the_problem(backend: Backend) -> None:
    await backend.queue.publish_raw(
        backend.type(), b"not json", run_id=backend.run_id, msg_id=f"{backend.run_id}.s.queued"
    )

    delivery = await fetch_one(backend)

    assert delivery.task is None
    assert delivery.problem.startswith("invalid JSON")


async def test_fetch_returns_a_partial_batch_without_waiting(backend: Backend) -> None:
    await publish(backend, "s1")
    await publish(backend, "s2")
    started = time.monotonic()

    deliveries = await backend.queue.fetch(backend.type(), 5, timedelta(seconds=30))

    assert steps(deliveries) == ["s1", "s2"]
    assert time.monotonic() - started < PROMPT_S


async def test_fetch_takes_at_most_max_messages_in_stream_order(backend: Backend) -> None:
    for step in ("s1", "s2", "s3"):
        await publish(backend, step)

    first = await backend.queue.fetch(backend.type(), 2, NO_WAIT)
    second = await backend.queue.fetch(backend.type(), 2, NO_WAIT)

    assert (steps(first), steps(second)) == (["s1", "s2"], ["s3"])


async def test_fetch_without_a_timeout_returns_nothing_at_once(backend: Backend) -> None:
    started = time.monotonic()

    assert await backend.queue.fetch(backend.type(), 1, NO_WAIT) == []
    assert time.monotonic() - started < PROMPT_S


async def test_a_waiting_fetch_takes_its_own_type_only(backend: Backend) -> None:
    await publish(backend, "s1", "sms")
    await publish(backend, "s2")

    deliveries = await backend.queue.fetch(backend.type(), 5, LONG_ENOUGH)

    assert steps(deliveries) == ["s2"]


async def test_a_waiting_fetch_returns_nothing_when_its_timeout_passes(backend: Backend) -> None:
    started = time.monotonic()

    assert await backend.queue.fetch(backend.type(), 1, timedelta(milliseconds=300)) == []
    assert time.monotonic() - started >= 0.3


async def test_messages_published_before_the_consumer_exists_are_delivered(
    backend: Backend,
) -> None:
    await publish(backend, "s1")
    await publish(backend, "s2", "sms")

    assert steps(await backend.queue.fetch(backend.type(), 5, NO_WAIT)) == ["s1"]
    assert steps(await backend.queue.fetch(backend.type("sms"), 5, NO_WAIT)) == ["s2"]


async def test_a_type_consumer_also_receives_its_dotted_subtypes(backend: Backend) -> None:
    await publish(backend, "s1", "email.bulk")

    delivery = await fetch_one(backend)

    assert delivery.task_type == backend.type()


async def test_an_unacked_delivery_is_redelivered_once_ack_wait_passes(backend: Backend) -> None:
    await publish(backend, "s1")
    first = await fetch_one(backend)
    fetched = time.monotonic()

    again = await fetch_one(backend)

    assert time.monotonic() - fetched > ACK_WAIT.total_seconds() - 0.05
    assert again.delivery_count == 2
    assert again.handle != first.handle


async def test_in_progress_restarts_ack_wait(backend: Backend) -> None:
    await publish(backend, "s1")
    delivery = await fetch_one(backend)
    early = await backend.queue.fetch(backend.type(), 1, timedelta(milliseconds=600))

    await backend.queue.in_progress(delivery.handle)
    postponed = await backend.queue.fetch(backend.type(), 1, timedelta(milliseconds=700))
    again = await fetch_one(backend)

    assert (early, postponed) == ([], [])
    assert again.delivery_count == 2


async def test_in_progress_once_ack_wait_has_passed_leaves_the_redelivery_due(
    backend: Backend,
) -> None:
    """JetStream hands the message out again all the same: a worker's heartbeat after
    AckWait (within its lease's grace) does not keep the task."""
    await publish(backend, "s1")
    delivery = await fetch_one(backend)
    await backend.queue.wait_ready([backend.type()], ACK_WAIT + timedelta(seconds=1))

    await backend.queue.in_progress(delivery.handle)
    again = await backend.queue.fetch(backend.type(), 1, timedelta(milliseconds=300))

    assert [d.delivery_count for d in again] == [2]


async def take_until_none_ready(backend: Backend) -> list[Delivery]:
    taken: list[Delivery] = []
    while batch := await backend.queue.fetch(backend.type(), 256, NO_WAIT):
        taken += batch
    return taken


async def test_no_new_message_is_delivered_while_max_ack_pending_are_unsettled(
    backend: Backend,
) -> None:
    """The consumers keep JetStream's default MaxAckPending, as the Go bridge's: a type has at
    most that many tasks in flight, and the next comes once one is settled."""
    await asyncio.gather(*(publish(backend, f"s{n}") for n in range(CONSUMER_MAX_ACK_PENDING + 1)))
    taken = await take_until_none_ready(backend)
    waiting = asyncio.create_task(backend.queue.wait_ready([backend.type()], LONG_ENOUGH))
    await asyncio.sleep(0)  # under way: the ack finds it waiting

    await backend.queue.ack(taken[0].handle)
    async with asyncio.timeout(LONG_ENOUGH.total_seconds()):
        await waiting
    last = await fetch_one(backend)

    published = {f"s{n}" for n in range(CONSUMER_MAX_ACK_PENDING + 1)}
    assert len(taken) == CONSUMER_MAX_ACK_PENDING
    assert (steps([last]), last.delivery_count) == (list(published - set(steps(taken))), 1)


async def test_nak_with_a_delay_redelivers_after_the_delay(backend: Backend) -> None:
    await publish(backend, "s1")
    delivery = await fetch_one(backend)

    await backend.queue.nak(delivery.handle, timedelta(milliseconds=300))
    nakked = time.monotonic()
    during = await backend.queue.fetch(backend.type(), 1, NO_WAIT)
    again = await fetch_one(backend)

    assert during == []
    assert time.monotonic() - nakked > 0.25
    assert again.delivery_count == 2


async def test_nak_without_delay_redelivers_at_once(backend: Backend) -> None:
    await publish(backend, "s1")
    delivery = await fetch_one(backend)

    await backend.queue.nak(delivery.handle, NO_WAIT)

    assert (await fetch_one(backend)).delivery_count == 2


async def test_ack_and_term_remove_messages_for_good(backend: Backend) -> None:
    await publish(backend, "s1")
    await publish(backend, "s2")
    acked, termed = await backend.queue.fetch(backend.type(), 2, LONG_ENOUGH)

    for _ in range(2):
        await backend.queue.ack(acked.handle)
        await backend.queue.term(termed.handle)
    later = await backend.queue.fetch(backend.type(), 1, ACK_WAIT + timedelta(milliseconds=300))

    assert later == []


async def test_an_ack_after_a_nak_still_settles_the_delivery(backend: Backend) -> None:
    await publish(backend, "s1")
    delivery = await fetch_one(backend)

    await backend.queue.nak(delivery.handle, timedelta(milliseconds=200))
    await backend.queue.ack(delivery.handle)

    assert await backend.queue.fetch(backend.type(), 1, timedelta(milliseconds=400)) == []


async def test_wait_ready_returns_at_once_when_a_type_has_a_message(backend: Backend) -> None:
    await publish(backend, "s1", "sms")
    started = time.monotonic()

    await backend.queue.wait_ready([backend.type(), backend.type("sms")], LONG_ENOUGH)

    assert time.monotonic() - started < PROMPT_S


async def test_wait_ready_wakes_when_a_later_nak_makes_a_message_deliverable(
    backend: Backend,
) -> None:
    await publish(backend, "s1")
    delivery = await fetch_one(backend)

    await backend.queue.nak(delivery.handle, NO_WAIT)
    started = time.monotonic()
    await backend.queue.wait_ready([backend.type()], LONG_ENOUGH)

    assert time.monotonic() - started < PROMPT_S


async def test_wait_ready_wakes_when_a_nak_delay_ends(backend: Backend) -> None:
    await publish(backend, "s1")
    await backend.queue.nak((await fetch_one(backend)).handle, timedelta(milliseconds=300))
    nakked = time.monotonic()

    await backend.queue.wait_ready([backend.type()], LONG_ENOUGH)

    assert 0.25 < time.monotonic() - nakked < 0.3 + PROMPT_S
    assert (await fetch_one(backend)).delivery_count == 2


async def test_wait_ready_returns_when_its_timeout_passes(backend: Backend) -> None:
    started = time.monotonic()

    await backend.queue.wait_ready([backend.type()], timedelta(milliseconds=300))

    assert 0.3 <= time.monotonic() - started < 0.3 + PROMPT_S


async def test_wait_ready_returns_once_one_of_its_stops_is_done_and_leaves_it_alone(
    backend: Backend,
) -> None:
    stop = Flag()
    shared = stop.future()
    waiting = asyncio.ensure_future(
        backend.queue.wait_ready([backend.type()], LONG_ENOUGH, until=[shared])
    )
    await asyncio.sleep(0)  # under way: the stop finds it at its wait, or on its way there
    assert not waiting.done()

    stop.set()
    await asyncio.wait_for(waiting, PROMPT_S)

    assert not shared.cancelled()


async def test_wait_ready_with_a_stop_already_done_returns_at_once(backend: Backend) -> None:
    stop = Flag()
    stop.set()

    await asyncio.wait_for(
        backend.queue.wait_ready([backend.type()], LONG_ENOUGH, until=[stop.future()]), PROMPT_S
    )


async def test_a_msg_id_seen_within_the_duplicate_window_is_dropped(backend: Backend) -> None:
    await publish(backend, "s1", msg_id=f"{backend.run_id}.dup")
    await publish(backend, "s2", msg_id=f"{backend.run_id}.dup")
    await publish(backend, "s3", msg_id=f"{backend.run_id}.other")

    assert steps(await backend.queue.fetch(backend.type(), 5, NO_WAIT)) == ["s1", "s3"]


async def test_two_types_with_one_durable_name_conflict(backend: Backend) -> None:
    dotted, hyphened = backend.type("send.email"), backend.type("send-email")
    await backend.queue.fetch(dotted, 1, NO_WAIT)

    with pytest.raises(ConsumerConflictError) as caught:
        await backend.queue.fetch(hyphened, 1, NO_WAIT)

    assert str(caught.value) == name_conflict(
        consumer_name(hyphened), consumer_filter(dotted), consumer_filter(hyphened)
    )


@pytest.mark.parametrize(("first", "second"), [("a", "a.b"), ("a.b", "a")])
async def test_overlapping_filters_conflict_on_the_work_queue(
    backend: Backend, first: str, second: str
) -> None:
    await backend.queue.fetch(backend.type(first), 1, NO_WAIT)

    with pytest.raises(ConsumerConflictError) as caught:
        await backend.queue.wait_ready([backend.type(second)], NO_WAIT)

    assert str(caught.value) == overlap_conflict(
        consumer_name(backend.type(second)),
        consumer_filter(backend.type(second)),
        consumer_filter(backend.type(first)),
    )
