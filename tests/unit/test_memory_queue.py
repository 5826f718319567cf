"""MemoryTaskQueue: the TASK_QUEUES work-queue stream as JetStream serves it, on a manual clock."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from adapters.memory.clock import EPOCH, ManualClock
from adapters.memory.queue import MemoryTaskQueue, MessageState, QueuedMessage
from adapters.wire import consumer_name
from domain.errors import ConsumerConflictError
from domain.models import Delivery, RunId, StepId, TaskPayload, TaskType

SAFETY = 1.0
"""Real seconds a test waits before calling a hang a failure; never reached when it passes."""
ACK_WAIT = timedelta(minutes=5)
TICK = timedelta(microseconds=1)
NO_WAIT = timedelta(0)
EMAIL = TaskType("email")


def decode(raw: bytes) -> TaskPayload:
    body = json.loads(raw)
    return TaskPayload(run_id=RunId(body["run_id"]), step_id=StepId(body["step_id"]))


def encode(task: TaskPayload) -> bytes:
    return json.dumps({"run_id": task.run_id, "step_id": task.step_id}).encode()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def queue(clock: ManualClock) -> MemoryTaskQueue:
    return MemoryTaskQueue(clock, decode, encode=encode, ack_wait=ACK_WAIT)


async def publish(
    queue: MemoryTaskQueue,
    step_id: str,
    task_type: TaskType = EMAIL,
    msg_id: str | None = None,
) -> None:
    task = TaskPayload(run_id=RunId("run-1"), step_id=StepId(step_id))
    await queue.publish_task(task_type, task, msg_id=msg_id or f"run-1.{step_id}.queued")


async def fetch_one(queue: MemoryTaskQueue, task_type: TaskType = EMAIL) -> Delivery:
    [delivery] = await queue.fetch(task_type, 1, NO_WAIT)
    return delivery


def steps(deliveries: list[Delivery]) -> list[str]:
    return [d.task.step_id for d in deliveries if d.task is not None]


async def test_a_delivery_carries_the_decoded_task_and_its_settlement_facts(
    queue: MemoryTaskQueue,
) -> None:
    await publish(queue, "s1")

    delivery = await fetch_one(queue)

    assert delivery.task == TaskPayload(run_id=RunId("run-1"), step_id=StepId("s1"))
    assert delivery.task_type == EMAIL
    assert delivery.delivery_count == 1
    assert delivery.ack_wait == ACK_WAIT
    assert delivery.headers == {}
    assert delivery.problem == ""
    assert queue.messages() == [
        QueuedMessage(
            seq=1, subject="task.email.run-1", delivery_count=1, state=MessageState.PENDING
        )
    ]


async def test_a_raw_publish_delivers_its_headers(queue: MemoryTaskQueue) -> None:
    body = b'{"run_id": "r", "step_id": "s"}'
    headers = {"traceparent": "00-abc-def-01"}
    await queue.publish_raw(EMAIL, body, run_id=RunId("r"), msg_id="r.s.queued", headers=headers)

    delivery = await fetch_one(queue)

    assert delivery.headers == headers
    assert delivery.task == TaskPayload(run_id=RunId("r"), step_id=StepId("s"))


async def test_an_undecodable_body_is_delivered_with_the_problem(queue: MemoryTaskQueue) -> None:
    await queue.publish_raw(EMAIL, b"not json", run_id=RunId("r"), msg_id="r.s.queued")

    delivery = await fetch_one(queue)

    assert delivery.task is None
    assert "Expecting value" in delivery.problem
    assert queue.messages()[0].subject == "task.email.r"


async def test_fetch_returns_a_partial_batch_without_waiting(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    await publish(queue, "s1")
    await publish(queue, "s2")

    deliveries = await asyncio.wait_for(queue.fetch(EMAIL, 5, timedelta(seconds=30)), SAFETY)

    assert steps(deliveries) == ["s1", "s2"]
    assert clock.sleepers == 0


async def test_fetch_takes_at_most_max_messages_in_stream_order(queue: MemoryTaskQueue) -> None:
    for step in ("s1", "s2", "s3"):
        await publish(queue, step)

    first = await queue.fetch(EMAIL, 2, NO_WAIT)
    second = await queue.fetch(EMAIL, 2, NO_WAIT)

    assert (steps(first), steps(second)) == (["s1", "s2"], ["s3"])


async def test_fetch_without_timeout_returns_nothing_at_once(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    assert await queue.fetch(EMAIL, 1, NO_WAIT) == []
    assert clock.sleepers == 0


async def test_a_waiting_fetch_wakes_on_publish(queue: MemoryTaskQueue, clock: ManualClock) -> None:
    fetching = asyncio.create_task(queue.fetch(EMAIL, 5, timedelta(seconds=30)))
    await clock.wait_for_sleepers()

    await publish(queue, "s1")

    assert steps(await asyncio.wait_for(fetching, SAFETY)) == ["s1"]
    assert clock.sleepers == 0


async def test_a_waiting_fetch_returns_nothing_when_the_timeout_passes_on_the_clock(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    fetching = asyncio.create_task(queue.fetch(EMAIL, 5, timedelta(seconds=30)))
    await clock.wait_for_sleepers()

    clock.advance(timedelta(seconds=30))

    assert await asyncio.wait_for(fetching, SAFETY) == []


async def test_a_waiting_fetch_ignores_other_task_types(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    fetching = asyncio.create_task(queue.fetch(EMAIL, 5, timedelta(seconds=30)))
    await clock.wait_for_sleepers()

    await publish(queue, "s1", TaskType("sms"))
    await publish(queue, "s2")

    assert steps(await asyncio.wait_for(fetching, SAFETY)) == ["s2"]


async def test_a_cancelled_fetch_leaves_no_sleeper(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    fetching = asyncio.create_task(queue.fetch(EMAIL, 5, timedelta(seconds=30)))
    await clock.wait_for_sleepers()

    fetching.cancel()
    await asyncio.gather(fetching, return_exceptions=True)

    assert clock.sleepers == 0


async def test_messages_published_before_the_consumer_exists_are_delivered(
    queue: MemoryTaskQueue,
) -> None:
    await publish(queue, "s1")
    await publish(queue, "s2", TaskType("sms"))

    assert steps(await queue.fetch(EMAIL, 5, NO_WAIT)) == ["s1"]
    assert steps(await queue.fetch(TaskType("sms"), 5, NO_WAIT)) == ["s2"]


async def test_a_type_consumer_also_receives_its_dotted_subtypes_as_jetstream_does(
    queue: MemoryTaskQueue,
) -> None:
    await publish(queue, "s1", TaskType("email.bulk"))

    delivery = await fetch_one(queue)

    assert delivery.task_type == EMAIL


async def test_an_unacked_delivery_is_redelivered_once_ack_wait_passes(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    await publish(queue, "s1")
    first = await fetch_one(queue)

    clock.advance(ACK_WAIT - TICK)
    early = await queue.fetch(EMAIL, 1, NO_WAIT)
    clock.advance(TICK)
    again = await fetch_one(queue)

    assert early == []
    assert again.delivery_count == 2
    assert again.handle != first.handle


async def test_in_progress_restarts_ack_wait(queue: MemoryTaskQueue, clock: ManualClock) -> None:
    await publish(queue, "s1")
    delivery = await fetch_one(queue)
    clock.advance(timedelta(minutes=4))

    await queue.in_progress(delivery.handle)
    clock.advance(timedelta(minutes=4))
    postponed = await queue.fetch(EMAIL, 1, NO_WAIT)
    clock.advance(timedelta(minutes=1))

    assert postponed == []
    assert (await fetch_one(queue)).delivery_count == 2


async def test_nak_with_a_delay_redelivers_after_the_delay(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    await publish(queue, "s1")
    delivery = await fetch_one(queue)

    await queue.nak(delivery.handle, timedelta(seconds=10))
    during = await queue.fetch(EMAIL, 1, NO_WAIT)
    state = queue.messages()[0].state
    clock.advance(timedelta(seconds=10))

    assert during == []
    assert state is MessageState.DELAYED
    assert (await fetch_one(queue)).delivery_count == 2


async def test_nak_without_delay_redelivers_at_once(queue: MemoryTaskQueue) -> None:
    await publish(queue, "s1")
    delivery = await fetch_one(queue)

    await queue.nak(delivery.handle, NO_WAIT)

    assert (await fetch_one(queue)).delivery_count == 2


async def test_in_progress_does_not_cancel_a_nak(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    await publish(queue, "s1")
    delivery = await fetch_one(queue)

    await queue.nak(delivery.handle, timedelta(seconds=10))
    await queue.in_progress(delivery.handle)
    clock.advance(timedelta(seconds=10))

    assert (await fetch_one(queue)).delivery_count == 2


@pytest.mark.parametrize("settle", ["ack", "term"])
async def test_ack_and_term_remove_the_message_for_good(
    queue: MemoryTaskQueue, clock: ManualClock, settle: str
) -> None:
    await publish(queue, "s1")
    delivery = await fetch_one(queue)

    await getattr(queue, settle)(delivery.handle)
    await getattr(queue, settle)(delivery.handle)
    clock.advance(ACK_WAIT * 2)

    assert await queue.fetch(EMAIL, 1, NO_WAIT) == []
    assert queue.messages() == []


async def test_an_ack_after_a_nak_still_settles_the_delivery(queue: MemoryTaskQueue) -> None:
    await publish(queue, "s1")
    delivery = await fetch_one(queue)

    await queue.nak(delivery.handle, timedelta(seconds=10))
    await queue.ack(delivery.handle)

    assert queue.messages() == []


async def test_settling_a_superseded_delivery_is_ignored(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    await publish(queue, "s1")
    first = await fetch_one(queue)
    clock.advance(ACK_WAIT)
    second = await fetch_one(queue)

    await queue.ack(first.handle)
    await queue.term(first.handle)
    await queue.nak(first.handle, NO_WAIT)
    await queue.in_progress(first.handle)

    assert [(m.delivery_count, m.state) for m in queue.messages()] == [(2, MessageState.PENDING)]
    await queue.ack(second.handle)
    assert queue.messages() == []


async def test_wait_ready_returns_at_once_when_a_type_has_a_message(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    await publish(queue, "s1", TaskType("sms"))

    await asyncio.wait_for(
        queue.wait_ready([EMAIL, TaskType("sms")], timedelta(seconds=30)), SAFETY
    )

    assert clock.sleepers == 0


async def test_wait_ready_wakes_on_a_publish_of_one_of_its_types(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    waiting = asyncio.create_task(queue.wait_ready([EMAIL], timedelta(seconds=30)))
    await clock.wait_for_sleepers()

    await publish(queue, "s1")

    await asyncio.wait_for(waiting, SAFETY)
    assert clock.now() == EPOCH


async def test_wait_ready_wakes_when_a_nak_delay_ends(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    await publish(queue, "s1")
    await queue.nak((await fetch_one(queue)).handle, timedelta(seconds=10))
    waiting = asyncio.create_task(queue.wait_ready([EMAIL], timedelta(seconds=30)))
    await clock.wait_for_sleepers()

    clock.advance(timedelta(seconds=10))

    await asyncio.wait_for(waiting, SAFETY)
    assert (await fetch_one(queue)).delivery_count == 2


async def test_wait_ready_wakes_when_a_later_nak_shortens_the_wait(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    await publish(queue, "s1")
    delivery = await fetch_one(queue)
    waiting = asyncio.create_task(queue.wait_ready([EMAIL], timedelta(seconds=30)))
    await clock.wait_for_sleepers()

    await queue.nak(delivery.handle, NO_WAIT)

    await asyncio.wait_for(waiting, SAFETY)


async def test_wait_ready_returns_when_its_timeout_passes_on_the_clock(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    waiting = asyncio.create_task(queue.wait_ready([EMAIL], timedelta(seconds=30)))
    await clock.wait_for_sleepers()

    clock.advance(timedelta(seconds=29))
    await asyncio.sleep(0)
    early = waiting.done()
    clock.advance(timedelta(seconds=1))

    await asyncio.wait_for(waiting, SAFETY)
    assert not early


async def test_publishes_with_a_msg_id_seen_within_two_minutes_are_dropped(
    queue: MemoryTaskQueue, clock: ManualClock
) -> None:
    await publish(queue, "s1", msg_id="dup")
    clock.advance(timedelta(minutes=2) - TICK)
    await publish(queue, "s2", msg_id="dup")
    clock.advance(TICK)
    await publish(queue, "s3", msg_id="dup")

    assert steps(await queue.fetch(EMAIL, 5, NO_WAIT)) == ["s1", "s3"]


def test_consumer_names_sanitise_the_task_type() -> None:
    assert consumer_name("send.email") == "workers-send-email"
    assert consumer_name("a b*c") == "workers-a_b_c"


async def test_two_types_with_one_durable_name_conflict(queue: MemoryTaskQueue) -> None:
    await queue.fetch(TaskType("send.email"), 1, NO_WAIT)

    with pytest.raises(ConsumerConflictError) as caught:
        await queue.fetch(TaskType("send-email"), 1, NO_WAIT)

    assert str(caught.value) == (
        'consumer "workers-send-email" already serves filter task.send.email.> but this poll '
        "needs task.send-email.>: two task types sanitize to the same durable name "
        "(dots collapse to hyphens) — rename one of them"
    )


@pytest.mark.parametrize(("first", "second"), [("a", "a.b"), ("a.b", "a")])
async def test_overlapping_filters_conflict_on_the_work_queue(
    queue: MemoryTaskQueue, first: str, second: str
) -> None:
    await queue.fetch(TaskType(first), 1, NO_WAIT)

    with pytest.raises(ConsumerConflictError) as caught:
        await queue.wait_ready([TaskType(second)], NO_WAIT)

    assert str(caught.value) == (
        f'cannot create consumer "{consumer_name(second)}" on filter task.{second}.>: another '
        f"consumer already covers an overlapping filter task.{first}.> on the TASK_QUEUES "
        "work-queue stream"
    )
