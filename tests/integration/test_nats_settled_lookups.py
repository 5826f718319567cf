"""What the recovery of a terminal resolve cut short reads on a real nats-server: whether the
run's history holds a msg-id (NatsEventLog.contains), and which message a delivery is
(Delivery.sequence, the same on a redelivery)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Final

import pytest
from nats.js.client import JetStreamContext

from adapters.codec import encode
from adapters.nats.events import NatsEventLog
from adapters.nats.queue import NatsTaskQueue
from domain.models import Event, OutboundEvent, RunId, StepId, TaskPayload
from tests.integration.jetstream import TaskStream, decode_event, history_stream, unique

pytestmark = pytest.mark.integration

MOMENT: Final = datetime(2026, 7, 19, 12, 0, 0, tzinfo=UTC)
LONG_ENOUGH: Final = timedelta(seconds=5)


@pytest.fixture
async def log(js: JetStreamContext, run_id: RunId, other_run: RunId) -> AsyncIterator[NatsEventLog]:
    async with history_stream(js, run_id, other_run) as stream:
        yield NatsEventLog(js, encode, decode_event, stream=stream)


def event(run_id: RunId, event_type: str, step: str = "s1", attempt: int = 1) -> OutboundEvent:
    return OutboundEvent(
        event=Event(
            type=event_type,
            run_id=run_id,
            step_id=StepId(step),
            timestamp=MOMENT,
            attempt_number=attempt,
        ),
        msg_id=f"{run_id}.{step}.{event_type}.{attempt}",
    )


async def test_contains_finds_an_events_msg_id_among_the_runs_history(
    log: NatsEventLog, run_id: RunId
) -> None:
    await log.append(event(run_id, "step.started"))
    await log.append(event(run_id, "step.started", step="s2"))
    await log.append(event(run_id, "step.completed"))

    assert await log.contains(run_id, f"{run_id}.s1.step.completed.1") is True
    assert await log.contains(run_id, f"{run_id}.s2.step.started.1") is True


async def test_contains_is_false_for_a_msg_id_the_run_never_had(
    log: NatsEventLog, run_id: RunId, other_run: RunId
) -> None:
    await log.append(event(run_id, "step.started"))
    await log.append(event(other_run, "step.completed"))

    assert await log.contains(run_id, f"{run_id}.s1.step.completed.1") is False
    assert await log.contains(run_id, f"{run_id}.s1.step.completed.2") is False
    assert await log.contains(other_run, f"{run_id}.s1.step.started.1") is False
    assert await log.contains(RunId(unique("run-")), f"{run_id}.s1.step.started.1") is False


async def test_contains_skips_a_message_without_a_msg_id(
    log: NatsEventLog, js: JetStreamContext, run_id: RunId
) -> None:
    await js.publish(f"history.{run_id}", b"{}")
    await log.append(event(run_id, "step.failed"))

    assert await log.contains(run_id, f"{run_id}.s1.step.failed.1") is True


async def test_a_redelivery_carries_its_messages_stream_sequence_and_a_new_handle(
    queue: NatsTaskQueue, stream: TaskStream
) -> None:
    task_type = stream.type()
    for step in ("s1", "s2"):
        task = TaskPayload(run_id=stream.run_id, step_id=StepId(step))
        await queue.publish_task(task_type, task, msg_id=f"{stream.run_id}.{step}.queued")

    first, second = await queue.fetch(task_type, 2, LONG_ENOUGH)
    await queue.nak(first.handle, timedelta(0))
    [again] = await queue.fetch(task_type, 1, LONG_ENOUGH)

    assert first.sequence > 0
    assert second.sequence != first.sequence
    assert (again.sequence, again.delivery_count) == (first.sequence, 2)
    assert again.handle != first.handle
