"""Poll and resolve on NATS, read back from the wire: msg-ids, envelopes, attempts, poison."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.js.errors import NotFoundError

from adapters.wire import (
    HISTORY_STREAM,
    MSG_ID_HEADER,
    TASK_STREAM,
    consumer_name,
    history_subject,
)
from app.embedded import EmbeddedNats
from domain.models import RawJson, RunId, StepId, TaskPayload, TaskType
from tests.integration.nats_harness import NatsHarness, close_harness, open_harness

pytestmark = pytest.mark.integration


@pytest.fixture
async def bridge(nats_server: EmbeddedNats) -> AsyncIterator[NatsHarness]:
    harness = await open_harness(nats_server.url)
    yield harness
    await close_harness(harness, WORK)


WORK = TaskType(f"d{uuid.uuid4().hex[:10]}.work")


def new_run() -> RunId:
    return RunId(f"run{uuid.uuid4().hex[:12]}")


async def wire_events(bridge: NatsHarness, run_id: RunId) -> list[tuple[str, dict[str, Any]]]:
    """(Nats-Msg-Id, envelope) of each message stored on history.<run>, in order."""
    stored: list[tuple[str, dict[str, Any]]] = []
    sequence = 0
    while True:
        try:
            message = await bridge.js.get_msg(
                HISTORY_STREAM, seq=sequence + 1, subject=history_subject(run_id), next=True
            )
        except NotFoundError:
            return stored
        sequence = message.seq or 0
        stored.append(((message.headers or {})[MSG_ID_HEADER], json.loads(message.data or b"")))


async def test_every_event_goes_to_history_with_the_go_msg_ids(bridge: NatsHarness) -> None:
    completed, failed, continued = new_run(), new_run(), new_run()
    for run_id in (completed, failed, continued):
        task = TaskPayload(run_id=run_id, step_id=StepId("s"), iteration=2)
        await bridge.queue.publish_task(WORK, task, msg_id=f"{run_id}.s.queued")
    tasks = {t.run_id: t for t in await bridge.poll_now(WORK, max_tasks=3)}

    await bridge.resolve_action(tasks[completed], "complete", output=RawJson(b'{"a": 1}'))
    await bridge.resolve_action(tasks[failed], "fail", error="x", failure_type="non_retriable")
    await bridge.resolve_action(tasks[continued], "continue", output=RawJson(b"[1]"))

    assert [i for i, _ in await wire_events(bridge, completed)] == [
        f"{completed}.s.step.started.1",
        f"{completed}.s.step.completed.1",
    ]
    (_, started), (_, done) = await wire_events(bridge, completed)
    assert list(started) == ["type", "run_id", "step_id", "timestamp", "attempt_number"]
    assert done["payload"] == {"a": 1}
    assert (await wire_events(bridge, failed))[1] == (
        f"{failed}.s.step.failed.1",
        done
        | {
            "type": "step.failed",
            "run_id": failed,
            "timestamp": (await wire_events(bridge, failed))[1][1]["timestamp"],
            "payload": {"error": "x", "failure_type": "non_retriable"},
        },
    )
    msg_id, envelope = (await wire_events(bridge, continued))[1]
    assert msg_id == f"{continued}.s.continue.2.{tasks[continued].lease_id}"
    assert "attempt_number" not in envelope
    assert envelope["payload"] == [1]


async def test_the_payload_attempt_wins_over_the_delivery_count(bridge: NatsHarness) -> None:
    run_id = new_run()
    task = TaskPayload(run_id=run_id, step_id=StepId("s"), attempt=7)
    await bridge.queue.publish_task(WORK, task, msg_id=f"{run_id}.s.retry_backoff.6")

    (polled,) = await bridge.poll_now(WORK)

    assert polled.attempt == 7
    assert [i for i, _ in await wire_events(bridge, run_id)] == [f"{run_id}.s.step.started.7"]


@pytest.mark.parametrize(
    "body", [b"not json", b'{"run_id": "r"}', b'{"run_id": 5, "step_id": "s"}', b"[]"]
)
async def test_a_malformed_task_is_consumed_and_never_handed_out(
    bridge: NatsHarness, body: bytes
) -> None:
    run_id = new_run()
    await bridge.queue.publish_raw(WORK, body, run_id=run_id, msg_id=f"{run_id}.bad")

    assert await bridge.poll_now(WORK) == []

    info = await bridge.js.consumer_info(TASK_STREAM, consumer_name(WORK))
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
    assert await wire_events(bridge, run_id) == []


@pytest.mark.parametrize("attempt", [-1, 100_001])
async def test_a_poison_attempt_is_terminated_not_nakked_forever(
    bridge: NatsHarness, attempt: int
) -> None:
    run_id = new_run()
    task = TaskPayload(run_id=run_id, step_id=StepId("s"), attempt=attempt)
    await bridge.queue.publish_task(WORK, task, msg_id=f"{run_id}.poison")

    assert await bridge.poll_now(WORK) == []

    info = await bridge.js.consumer_info(TASK_STREAM, consumer_name(WORK))
    assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)
    assert await wire_events(bridge, run_id) == []
