"""The engine simulation on the memory adapters with a manual clock (PROTOCOL.md 8, 1.3)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import attrs
import pytest

from domain.models import (
    Event,
    FailureType,
    OutboundEvent,
    PolledTask,
    RawJson,
    RunId,
    StepFailed,
    StepId,
    TaskPayload,
    TaskType,
)
from domain.protocol import (
    STEP_COMPLETED,
    STEP_CONTINUE,
    STEP_FAILED,
    STEP_STARTED,
    WORKFLOW_COMPLETED,
    WORKFLOW_FAILED,
    engine_failure,
)
from domain.services.engine import ObservedEventLog, RetryPolicy
from domain.services.runs import RunStatus, SimulatedRun, SimulatedRuns
from domain.services.simulator import EnqueueCommand
from tests.factories import EngineHarness

WORK = TaskType("work")
RUN = RunId("r1")
STEP = StepId("step-1")
SAFETY = 1.0
"""Real seconds before a hang counts as a failure; never reached when the test passes."""


@pytest.fixture
async def bridge() -> AsyncIterator[EngineHarness]:
    harness = EngineHarness()
    async with harness.engine:
        yield harness
    assert harness.engine.pending == 0
    assert harness.clock.sleepers == 0


async def start(bridge: EngineHarness, run_id: str = RUN, **fields: Any) -> PolledTask:
    await bridge.enqueue(EnqueueCommand(task_type=WORK, run_id=RunId(run_id), **fields))
    (task,) = await bridge.poll_now(WORK)
    return task


async def fail(bridge: EngineHarness, task: PolledTask, **fields: Any) -> None:
    await bridge.resolve_action(task, "fail", error="boom", **fields)


async def advance(bridge: EngineHarness, ms: int) -> None:
    """Move the clock, then let the retries that fell due publish their tasks."""
    bridge.clock.advance(timedelta(milliseconds=ms))
    await asyncio.wait_for(bridge.engine.settle(), SAFETY)


async def history(bridge: EngineHarness, run_id: str = RUN) -> list[str]:
    return [event.type for event in await bridge.events.read(RunId(run_id))]


def run_of(bridge: EngineHarness, run_id: str = RUN) -> SimulatedRun:
    run = bridge.runs.get(RunId(run_id))
    assert run is not None
    return run


def step_event(bridge: EngineHarness, event_type: str, **fields: Any) -> Event:
    return Event(type=event_type, run_id=RUN, step_id=STEP, timestamp=bridge.clock.now(), **fields)


@pytest.mark.parametrize("failure_type", [None, "retriable"])
async def test_a_retriable_failure_is_enqueued_again_as_the_next_attempt_after_the_backoff(
    bridge: EngineHarness, failure_type: str | None
) -> None:
    task = await start(bridge, input=RawJson(b'{"n": 1}'), metadata={"k": "v"})

    await fail(bridge, task, failure_type=failure_type)
    await advance(bridge, 999)
    too_early = await bridge.poll_now(WORK)
    await advance(bridge, 1)
    (again,) = await bridge.poll_now(WORK)

    assert too_early == []
    assert (again.task_id, again.attempt, again.iteration) == (task.task_id, 2, 0)
    assert (again.input, again.metadata) == (b'{"n": 1}', {"k": "v"})
    assert bridge.publisher.msg_ids == ["r1.step-1.queued", "r1.step-1.retry_backoff.1"]
    assert (run_of(bridge).status, run_of(bridge).attempts) == (RunStatus.RUNNING, 2)


async def test_each_backoff_is_factor_times_the_previous_one(bridge: EngineHarness) -> None:
    first = await start(bridge)
    await fail(bridge, first)
    await advance(bridge, 1_000)
    (second,) = await bridge.poll_now(WORK)

    await fail(bridge, second)
    await advance(bridge, 1_999)
    too_early = await bridge.poll_now(WORK)
    await advance(bridge, 1)
    (third,) = await bridge.poll_now(WORK)

    assert too_early == []
    assert third.attempt == 3
    assert bridge.publisher.msg_ids[1:] == [
        "r1.step-1.retry_backoff.1",
        "r1.step-1.retry_backoff.2",
    ]


async def test_a_pending_retry_shows_when_it_is_due(bridge: EngineHarness) -> None:
    task = await start(bridge)

    await fail(bridge, task)

    run = run_of(bridge)
    assert run.retry_at == bridge.clock.now() + timedelta(seconds=1)
    assert (run.last_event, bridge.engine.pending) == (STEP_FAILED, 1)
    await advance(bridge, 1_000)
    assert run_of(bridge).retry_at is None


async def test_retry_after_waits_the_time_the_worker_asked_for(bridge: EngineHarness) -> None:
    task = await start(bridge)

    await fail(bridge, task, failure_type="retry_after", retry_after_ms=250)
    await advance(bridge, 249)
    too_early = await bridge.poll_now(WORK)
    await advance(bridge, 1)
    (again,) = await bridge.poll_now(WORK)

    assert too_early == []
    assert again.attempt == 2
    assert bridge.publisher.msg_ids[-1] == "r1.step-1.retry_after.1"


@pytest.mark.parametrize(
    ("sent_ms", "waited_ms"),
    [(None, 100), (0, 100), (-5, 100), (1, 1), (7_200_000, 3_600_000)],
)
async def test_retry_after_is_clamped_as_the_engine_clamps_it(
    bridge: EngineHarness, sent_ms: int | None, waited_ms: int
) -> None:
    await start(bridge)
    failure = StepFailed(
        error="slow down", failure_type=FailureType.RETRY_AFTER, retry_after_ms=sent_ms
    )

    await bridge.engine.observe(step_event(bridge, STEP_FAILED, payload=failure, attempt_number=1))
    await advance(bridge, waited_ms - 1)
    published_early = list(bridge.publisher.msg_ids)
    await advance(bridge, 1)

    assert published_early == ["r1.step-1.queued"]
    assert bridge.publisher.msg_ids == ["r1.step-1.queued", "r1.step-1.retry_after.1"]


@pytest.mark.parametrize("failure_type", ["non_retriable", "permanent"])
async def test_a_non_retriable_failure_fails_the_run_and_nothing_is_enqueued(
    bridge: EngineHarness, failure_type: str
) -> None:
    task = await start(bridge)

    await fail(bridge, task, failure_type=failure_type)
    await advance(bridge, 3_600_000)

    assert await bridge.poll_now(WORK) == []
    assert await history(bridge) == [STEP_STARTED, STEP_FAILED, WORKFLOW_FAILED]
    assert bridge.publisher.msg_ids == ["r1.step-1.queued"]
    run = run_of(bridge)
    assert (run.status, run.error, run.last_event) == (RunStatus.FAILED, "boom", WORKFLOW_FAILED)


async def test_the_workflow_event_has_the_engine_msg_id_and_no_step(bridge: EngineHarness) -> None:
    task = await start(bridge)

    await fail(bridge, task, failure_type="non_retriable")

    outbound = bridge.events.outbound(RUN)[-1]
    assert outbound.msg_id == "r1.workflow.failed"
    assert (outbound.event.step_id, outbound.event.payload) == (None, None)
    assert outbound.event.attempt_number is None


async def test_the_run_fails_when_its_attempts_are_exhausted() -> None:
    bridge = EngineHarness(retry=RetryPolicy(max_attempts=3))
    async with bridge.engine:
        task = await start(bridge)
        for wait_ms in (1_000, 2_000):
            await fail(bridge, task)
            await advance(bridge, wait_ms)
            (task,) = await bridge.poll_now(WORK)

        await fail(bridge, task)
        await advance(bridge, 3_600_000)

        assert task.attempt == 3
        assert await bridge.poll_now(WORK) == []
        assert bridge.engine.pending == 0
    assert bridge.publisher.msg_ids == [
        "r1.step-1.queued",
        "r1.step-1.retry_backoff.1",
        "r1.step-1.retry_backoff.2",
    ]
    assert (await history(bridge))[-2:] == [STEP_FAILED, WORKFLOW_FAILED]
    run = run_of(bridge)
    assert (run.status, run.attempts) == (RunStatus.FAILED, 3)
    assert run.error == "retries exhausted after 3 attempts: boom"


async def test_retry_after_also_ends_when_the_attempts_are_exhausted() -> None:
    bridge = EngineHarness(retry=RetryPolicy(max_attempts=1))
    async with bridge.engine:
        task = await start(bridge)

        await fail(bridge, task, failure_type="retry_after", retry_after_ms=100)

        assert bridge.engine.pending == 0
    assert run_of(bridge).status is RunStatus.FAILED


async def test_continue_enqueues_the_next_iteration_at_once_in_the_same_attempt(
    bridge: EngineHarness,
) -> None:
    task = await start(bridge, input=RawJson(b'"prompt"'))

    await bridge.resolve_action(task, "continue", output=RawJson(b'{"step": 1}'))
    (second,) = await bridge.poll_now(WORK)

    assert (second.iteration, second.attempt, second.input) == (1, 1, b'"prompt"')
    assert bridge.publisher.msg_ids == ["r1.step-1.queued", "r1.step-1.continue.1"]
    assert (run_of(bridge).iteration, run_of(bridge).status) == (1, RunStatus.RUNNING)


async def test_an_agent_loop_fails_its_run_at_max_iterations() -> None:
    bridge = EngineHarness(max_iterations=3)
    async with bridge.engine:
        task = await start(bridge)
        iterations = []
        for _ in range(2):
            await bridge.resolve_action(task, "continue")
            (task,) = await bridge.poll_now(WORK)
            iterations.append(task.iteration)

        await bridge.resolve_action(task, "continue")

        assert iterations == [1, 2]
        assert await bridge.poll_now(WORK) == []
    assert (await history(bridge))[-2:] == [STEP_CONTINUE, WORKFLOW_FAILED]
    run = run_of(bridge)
    assert (run.status, run.iteration) == (RunStatus.FAILED, 2)
    assert run.error == "agent loop exceeded max iterations (3)"


async def test_a_completed_step_completes_its_one_step_run(bridge: EngineHarness) -> None:
    task = await start(bridge)

    await bridge.resolve_action(task, "complete", output=RawJson(b"{}"))

    assert await history(bridge) == [STEP_STARTED, STEP_COMPLETED, WORKFLOW_COMPLETED]
    assert bridge.events.outbound(RUN)[-1].msg_id == "r1.workflow.completed"
    run = run_of(bridge)
    assert (run.status, run.attempts, run.error) == (RunStatus.COMPLETED, 1, None)


async def test_a_run_that_ends_cancels_its_pending_retry(bridge: EngineHarness) -> None:
    task = await start(bridge)
    await fail(bridge, task)

    await bridge.engine.observe(step_event(bridge, STEP_COMPLETED, attempt_number=1))
    await advance(bridge, 60_000)

    assert bridge.engine.pending == 0
    assert bridge.publisher.msg_ids == ["r1.step-1.queued"]
    assert run_of(bridge).status is RunStatus.COMPLETED


async def test_events_of_a_finished_run_change_nothing(bridge: EngineHarness) -> None:
    task = await start(bridge)
    await bridge.resolve_action(task, "complete")

    await bridge.engine.observe(step_event(bridge, STEP_FAILED, attempt_number=1))

    assert bridge.engine.pending == 0
    assert await history(bridge) == [STEP_STARTED, STEP_COMPLETED, WORKFLOW_COMPLETED]


async def test_runs_it_did_not_enqueue_are_left_alone(bridge: EngineHarness) -> None:
    foreign = TaskPayload(run_id=RunId("r9"), step_id=STEP)
    await bridge.queue.publish_task(WORK, foreign, msg_id="r9.step-1.queued")
    (task,) = await bridge.poll_now(WORK)

    await fail(bridge, task, failure_type="non_retriable")

    assert await history(bridge, "r9") == [STEP_STARTED, STEP_FAILED]
    assert bridge.runs.all() == []


async def test_another_step_of_a_running_run_is_not_followed(bridge: EngineHarness) -> None:
    await start(bridge)
    await bridge.enqueue(EnqueueCommand(task_type=WORK, run_id=RUN, step_id=StepId("other")))
    (other,) = await bridge.poll_now(WORK)

    await fail(bridge, other, failure_type="non_retriable")

    assert run_of(bridge).status is RunStatus.RUNNING
    assert run_of(bridge).step_id == STEP


async def test_a_finished_run_id_enqueued_again_is_a_new_run(bridge: EngineHarness) -> None:
    task = await start(bridge)
    await bridge.resolve_action(task, "complete")
    bridge.clock.advance(timedelta(minutes=3))  # past the queue's duplicate window

    await start(bridge)

    run = run_of(bridge)
    assert (run.status, run.attempts) == (RunStatus.RUNNING, 1)


def test_beyond_the_runs_kept_the_run_that_finished_first_is_forgotten() -> None:
    """Not the one enqueued first: a run is forgotten once it has been finished longest."""
    runs = SimulatedRuns(finished_kept=2)
    begun = {
        name: runs.begin(WORK, TaskPayload(run_id=RunId(name), step_id=STEP))
        for name in ("running", "r1", "r2", "r3", "again")
    }
    for name in ("r2", "again", "r1"):
        run = begun[name]
        assert run is not None
        runs.put(attrs.evolve(run, status=RunStatus.COMPLETED))
    runs.begin(WORK, TaskPayload(run_id=RunId("again"), step_id=STEP))  # a new run, running
    finished_r3 = begun["r3"]
    assert finished_r3 is not None
    runs.put(attrs.evolve(finished_r3, status=RunStatus.FAILED))

    assert [(run.run_id, run.status.value) for run in runs.all()] == [
        ("running", "running"),
        ("r1", "completed"),
        ("r3", "failed"),
        ("again", "running"),
    ]


async def test_stopping_cancels_the_pending_retries_and_then_ignores_events() -> None:
    bridge = EngineHarness()
    bridge.engine.start()
    task = await start(bridge)
    await fail(bridge, task)
    await asyncio.wait_for(bridge.clock.wait_for_sleepers(), SAFETY)

    await bridge.engine.stop()
    await bridge.engine.observe(step_event(bridge, STEP_COMPLETED, attempt_number=1))

    assert (bridge.engine.pending, bridge.clock.sleepers) == (0, 0)
    assert run_of(bridge).status is RunStatus.RUNNING


async def test_settling_with_nothing_due_returns_at_once(bridge: EngineHarness) -> None:
    task = await start(bridge)
    await fail(bridge, task)

    await asyncio.wait_for(bridge.engine.settle(), SAFETY)

    assert bridge.engine.pending == 1


async def test_the_observed_log_tells_only_the_events_it_stored(bridge: EngineHarness) -> None:
    seen: list[Event] = []

    @attrs.define
    class Observer:
        async def observe(self, event: Event) -> None:
            seen.append(event)

    log = ObservedEventLog(bridge.events, Observer())
    outbound = OutboundEvent(event=step_event(bridge, STEP_STARTED), msg_id="m1")

    stored = [await log.append(outbound), await log.append(outbound)]

    assert stored == [True, False]
    assert seen == [outbound.event]
    assert await log.read(RUN) == [outbound.event]


@pytest.mark.parametrize(
    ("attempts", "delay"),
    [
        (0, timedelta(seconds=1)),
        (1, timedelta(seconds=1)),
        (2, timedelta(seconds=2)),
        (3, timedelta(seconds=4)),
        (20, timedelta(hours=1)),
        (5_000, timedelta(hours=1)),
    ],
)
def test_the_backoff_grows_by_the_factor_up_to_an_hour(attempts: int, delay: timedelta) -> None:
    assert RetryPolicy().delay_after(attempts) == delay


def test_a_zero_initial_delay_still_waits_a_millisecond() -> None:
    policy = RetryPolicy(initial_delay=timedelta(0), factor=1.5)

    assert policy.delay_after(4) == timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"factor": 0}, "factor"),
        ({"initial_delay": timedelta(seconds=-1)}, "negative"),
    ],
)
def test_a_retry_policy_refuses_nonsense(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**policy)


@pytest.mark.parametrize(
    ("payload", "failure_type", "error"),
    [
        (None, FailureType.RETRIABLE, ""),
        (b"", FailureType.RETRIABLE, ""),
        (b'{"error":"x","failure_type":"non_retriable"}', FailureType.NON_RETRIABLE, "x"),
        (b'{"error":"x","failure_type":"retry_after"}', FailureType.RETRY_AFTER, "x"),
        (b'{"error":"x","failure_type":"permanent"}', FailureType.RETRIABLE, "x"),
        (b'{"error":"","failure_type":"non_retriable"}', FailureType.RETRIABLE, None),
        (b'"plain text"', FailureType.RETRIABLE, "plain text"),
        (b"not json", FailureType.RETRIABLE, "not json"),
    ],
)
def test_a_failure_payload_is_read_as_the_engine_reads_it(
    payload: bytes | None, failure_type: FailureType, error: str | None
) -> None:
    failure = engine_failure(RawJson(payload) if payload is not None else None)

    assert failure.failure_type is failure_type
    if error is not None:
        assert failure.error == error


def test_a_structured_failure_with_an_empty_error_is_downgraded_to_retriable() -> None:
    sent = StepFailed(error="", failure_type=FailureType.NON_RETRIABLE)

    assert engine_failure(sent).failure_type is FailureType.RETRIABLE


def test_a_retry_after_payload_keeps_its_delay() -> None:
    raw = RawJson(b'{"error":"x","failure_type":"retry_after","retry_after_ms":250}')

    assert engine_failure(raw).retry_after_ms == 250
