"""The use cases on the memory adapters with a manual clock: every action and Decision."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from datetime import timedelta

import attrs
import pytest

from adapters.memory.clock import ManualClock
from adapters.memory.kv import MemoryBuckets, MemoryKeyValue
from adapters.memory.leases import MemoryLeaseStore
from adapters.metrics import PrometheusTelemetry
from adapters.workers import KvWorkerDirectory
from domain.errors import (
    AlreadySettledError,
    BackendError,
    BackendUnavailableError,
    BucketUnavailableError,
    ConsumerConflictError,
    SignalTimeoutError,
    StaleLeaseError,
    TaskNotFoundError,
)
from domain.models import (
    DeliveryHandle,
    KvEntry,
    Lease,
    RawJson,
    RunId,
    StepId,
    TaskId,
    TaskPayload,
    TaskType,
    WorkerId,
)
from domain.protocol import STEP_COMPLETED, STEP_CONTINUE, STEP_FAILED, STEP_STARTED
from domain.services.actions import ResolveRequest
from domain.services.flag import Flag
from domain.services.poll import PollCommand, PollService
from domain.services.simulator import EnqueueCommand
from domain.services.workers import ConnectCommand, WorkerRegistry
from tests.factories import ACK_WAIT, Harness, PassThroughQueue

WORK = TaskType("work")


async def enqueue(bridge: Harness, run_id: str = "r1", **fields: object) -> None:
    await bridge.enqueue(EnqueueCommand(task_type=WORK, run_id=RunId(run_id), **fields))  # type: ignore[arg-type]


async def take_one(bridge: Harness) -> object:
    (task,) = await bridge.poll_now(WORK)
    return task


@pytest.fixture
def bridge() -> Harness:
    return Harness()


async def test_poll_hands_out_at_most_max_tasks_and_answers_without_waiting_for_a_full_batch(
    bridge: Harness,
) -> None:
    for run in ("r1", "r2", "r3"):
        await enqueue(bridge, run)

    tasks = await bridge.poll(
        PollCommand(task_types=[WORK], max_tasks=2, timeout=timedelta(seconds=30))
    )
    rest = await bridge.poll(
        PollCommand(task_types=[WORK], max_tasks=5, timeout=timedelta(seconds=30))
    )

    assert [t.run_id for t in tasks] == ["r1", "r2"]
    assert [t.run_id for t in rest] == ["r3"]


async def test_an_empty_poll_waits_its_timeout_on_the_clock_and_answers_nothing(
    bridge: Harness,
) -> None:
    polling = asyncio.ensure_future(
        bridge.poll(PollCommand(task_types=[WORK], max_tasks=1, timeout=timedelta(seconds=5)))
    )
    await bridge.clock.wait_for_sleepers()

    bridge.clock.advance(timedelta(seconds=5))

    assert await asyncio.wait_for(polling, 1) == []


async def test_a_waiting_poll_wakes_when_a_task_is_enqueued(bridge: Harness) -> None:
    polling = asyncio.ensure_future(
        bridge.poll(PollCommand(task_types=[WORK], max_tasks=1, timeout=timedelta(seconds=30)))
    )
    await bridge.clock.wait_for_sleepers()

    await enqueue(bridge, "r7")

    (task,) = await asyncio.wait_for(polling, 1)
    assert task.run_id == "r7"


async def test_a_waiting_poll_whose_client_leaves_does_not_keep_the_drain_from_the_others(
    bridge: Harness,
) -> None:
    """Every waiting poll watches the one future of the drain: cancelling a poll must not
    cancel it, or no other poll would end when the drain begins."""
    waiting = [
        asyncio.ensure_future(
            bridge.poll(PollCommand(task_types=[WORK], max_tasks=1, timeout=timedelta(hours=1)))
        )
        for _ in range(3)
    ]
    await bridge.clock.wait_for_sleepers()

    waiting[0].cancel()
    await asyncio.gather(waiting[0], return_exceptions=True)
    still_waiting = not bridge.poll.drain.when_begun().done()
    bridge.poll.drain.begin()

    assert still_waiting

    assert await asyncio.wait_for(asyncio.gather(*waiting[1:]), 1) == [[], []]


async def test_a_client_that_leaves_gets_its_tasks_released_at_once(bridge: Harness) -> None:
    await enqueue(bridge)
    gone = Flag()
    gone.set()

    tasks = await bridge.poll(
        PollCommand(task_types=[WORK], max_tasks=1, timeout=timedelta(0), abandoned=gone)
    )

    assert tasks == []
    (again,) = await bridge.poll_now(WORK)
    assert again.attempt == 2


@pytest.mark.parametrize("ending", ["client_leaves", "drain_begins"])
async def test_a_waiting_poll_that_ends_early_leases_nothing_that_became_ready_meanwhile(
    bridge: Harness, ending: str
) -> None:
    gone = Flag()
    polling = asyncio.ensure_future(
        bridge.poll(
            PollCommand(
                task_types=[WORK], max_tasks=1, timeout=timedelta(seconds=30), abandoned=gone
            )
        )
    )
    await bridge.clock.wait_for_sleepers()

    if ending == "client_leaves":
        gone.set()
    else:
        bridge.poll.drain.begin()
    await enqueue(bridge)

    assert await asyncio.wait_for(polling, 1) == []
    assert await bridge.events.read(RunId("r1")) == []
    (task,) = await bridge.poll_now(WORK)
    assert task.attempt == 1


async def test_a_type_that_faults_does_not_starve_its_sibling(bridge: Harness) -> None:
    await bridge.poll_now("a")
    await enqueue(bridge)

    tasks = await bridge.poll_now("a.b", "work")

    assert [t.run_id for t in tasks] == ["r1"]


@attrs.define
class WaitFaultsOnce(PassThroughQueue):
    """The memory queue, whose first wait faults as a NATS consumer deleted under it would."""

    struck: bool = False

    async def wait_ready(
        self,
        task_types: Sequence[TaskType],
        timeout: timedelta,
        *,
        until: Collection[asyncio.Future[None]] = (),
    ) -> None:
        if not self.struck:
            self.struck = True
            raise BackendError("wait for work tasks: 409 Consumer Deleted")
        await self.inner.wait_ready(task_types, timeout, until=until)


async def test_a_fault_while_waiting_ends_the_wait_not_the_poll(bridge: Harness) -> None:
    queue = WaitFaultsOnce(bridge.queue)
    poll = attrs.evolve(bridge.poll, queue=queue)
    polling = asyncio.ensure_future(
        poll(PollCommand(task_types=[WORK], max_tasks=1, timeout=timedelta(seconds=30)))
    )
    # Bounded: a poll that the fault ended never comes to wait.
    await asyncio.wait_for(bridge.clock.wait_for_sleepers(), 1)

    await enqueue(bridge)

    (task,) = await asyncio.wait_for(polling, 1)
    assert queue.struck
    assert task.run_id == "r1"


async def test_a_poll_that_got_nothing_and_faulted_raises_the_fault(bridge: Harness) -> None:
    await bridge.poll_now("a")

    with pytest.raises(ConsumerConflictError, match=r"task\.a\.>"):
        await bridge.poll_now("a.b")


def counted(bridge: Harness) -> tuple[PollService, PrometheusTelemetry]:
    telemetry = PrometheusTelemetry(leases=lambda: bridge.leases, version="0")
    return attrs.evolve(bridge.poll, telemetry=telemetry), telemetry


def poll_waits(telemetry: PrometheusTelemetry, outcome: str) -> float | None:
    return telemetry.registry.get_sample_value(
        "dagnats_bridge_poll_wait_seconds_count", {"outcome": outcome}
    )


async def test_a_poll_that_faults_is_logged_with_its_cause_and_counted(
    bridge: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    poll, telemetry = counted(bridge)
    caplog.set_level(logging.INFO)
    await bridge.poll_now("a")

    with pytest.raises(ConsumerConflictError):
        await poll(PollCommand(task_types=[TaskType("a.b")], max_tasks=1, timeout=timedelta(0)))

    (line,) = [r for r in caplog.records if r.name == "dagnats_bridge.requests"]
    assert line.levelno == logging.WARNING
    assert line.outcome == "failed"  # type: ignore[attr-defined]
    assert line.cause.startswith("ConsumerConflictError: ")  # type: ignore[attr-defined]
    assert poll_waits(telemetry, "failed") == 1


async def test_a_poll_cancelled_while_it_waits_is_counted_as_abandoned(bridge: Harness) -> None:
    poll, telemetry = counted(bridge)
    polling = asyncio.ensure_future(
        poll(PollCommand(task_types=[WORK], max_tasks=1, timeout=timedelta(seconds=30)))
    )
    await bridge.clock.wait_for_sleepers()

    polling.cancel()

    with pytest.raises(asyncio.CancelledError):
        await polling
    assert poll_waits(telemetry, "abandoned") == 1


async def test_a_malformed_task_is_consumed_and_skipped(bridge: Harness) -> None:
    await bridge.queue.publish_raw(WORK, b'{"run_id": 5}', run_id=RunId("bad"), msg_id="m1")
    await enqueue(bridge, "r2")

    tasks = await bridge.poll_now(WORK, max_tasks=2)

    assert [t.run_id for t in tasks] == ["r2"]
    assert all(m.subject != "task.work.bad" for m in bridge.queue.messages())


@pytest.mark.parametrize("attempt", [-1, 100_001])
async def test_a_poison_attempt_is_terminated_never_handed_out(
    bridge: Harness, attempt: int
) -> None:
    task = TaskPayload(run_id=RunId("r1"), step_id=StepId("s"), attempt=attempt)
    await bridge.queue.publish_task(WORK, task, msg_id="m1")

    assert await bridge.poll_now(WORK) == []
    assert bridge.queue.messages() == []
    assert await bridge.events.read(RunId("r1")) == []


async def test_the_payload_attempt_wins_over_the_delivery_count(bridge: Harness) -> None:
    await enqueue(bridge, attempt=4)

    (task,) = await bridge.poll_now(WORK)

    assert task.attempt == 4


async def test_complete_publishes_then_acks_and_a_repeat_is_a_replay(bridge: Harness) -> None:
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)

    first = await bridge.resolve_action(task, "complete", output=RawJson(b'{"a": 1}'))
    second = await bridge.resolve_action(task, "complete", output=RawJson(b'{"a": 1}'))

    assert (first.replayed, second.replayed) == (False, True)
    events = await bridge.events.read(RunId("r1"))
    assert [e.type for e in events] == [STEP_STARTED, STEP_COMPLETED]
    assert events[1].payload == b'{"a": 1}'
    assert bridge.queue.messages() == []
    (outbound,) = [o for o in bridge.events.outbound(RunId("r1")) if o.event.type == STEP_COMPLETED]
    assert outbound.msg_id == "r1.step-1.step.completed.1"


async def test_a_different_terminal_action_on_a_settled_task_conflicts(bridge: Harness) -> None:
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)
    await bridge.resolve_action(task, "fail", error="boom")

    with pytest.raises(AlreadySettledError, match="fail"):
        await bridge.resolve_action(task, "complete")
    with pytest.raises(AlreadySettledError):
        await bridge.resolve_action(task, "heartbeat")


async def test_concurrent_terminal_resolves_let_exactly_one_win(bridge: Harness) -> None:
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)

    outcomes = await asyncio.gather(
        bridge.resolve_action(task, "complete"),
        bridge.resolve_action(task, "fail", error="x"),
        return_exceptions=True,
    )

    assert sum(isinstance(o, AlreadySettledError) for o in outcomes) == 1
    terminal = [e for e in await bridge.events.read(RunId("r1")) if e.type != STEP_STARTED]
    assert len(terminal) == 1


async def test_fail_writes_the_engine_payload(bridge: Harness) -> None:
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)

    await bridge.resolve_action(task, "fail", failure_type="retry_after", retry_after_ms=5)

    failed = (await bridge.events.read(RunId("r1")))[-1]
    assert failed.type == STEP_FAILED
    assert failed.attempt_number == 1
    assert failed.payload is not None
    assert not isinstance(failed.payload, bytes)
    assert (failed.payload.error, failed.payload.retry_after_ms) == ("unspecified error", 100)


async def test_continue_uses_a_msg_id_that_makes_a_retry_a_duplicate(bridge: Harness) -> None:
    await enqueue(bridge, iteration=3)
    (task,) = await bridge.poll_now(WORK)

    await bridge.resolve_action(task, "continue", output=RawJson(b"[1]"))

    (outbound,) = [o for o in bridge.events.outbound(RunId("r1")) if o.event.type == STEP_CONTINUE]
    assert outbound.msg_id == f"r1.step-1.continue.3.{task.lease_id}"
    assert outbound.event.attempt_number is None


async def test_pause_redelivers_after_the_delay_with_the_checkpoint(bridge: Harness) -> None:
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)

    await bridge.resolve_action(
        task, "pause", duration_ms=10_000, checkpoint=RawJson(b'{"step": 2}')
    )

    assert await bridge.poll_now(WORK) == []
    bridge.clock.advance(timedelta(seconds=10))
    (again,) = await bridge.poll_now(WORK)
    assert (again.attempt, again.checkpoint) == (2, b'{"step": 2}')


async def test_pause_with_only_a_name_writes_the_native_marker(bridge: Harness) -> None:
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)

    await bridge.resolve_action(task, "pause", duration_ms=1, name="approval")

    bridge.clock.advance(timedelta(milliseconds=1))
    (again,) = await bridge.poll_now(WORK)
    assert again.checkpoint == b'{"pause_resume":"approval"}'


async def test_pause_without_checkpoint_or_name_keeps_the_saved_checkpoint(
    bridge: Harness,
) -> None:
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)
    await bridge.resolve_action(task, "checkpoint", data=RawJson(b"7"))

    await bridge.resolve_action(task, "pause", duration_ms=1)

    bridge.clock.advance(timedelta(milliseconds=1))
    (again,) = await bridge.poll_now(WORK)
    assert again.checkpoint == b"7"


async def test_a_poll_reads_the_checkpoints_of_all_its_tasks_at_once(
    bridge: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    for run_id in ("r1", "r2", "r3"):
        await enqueue(bridge, run_id)
    checkpoints = await bridge.buckets.checkpoints()
    assert checkpoints is not None
    await checkpoints.put("r1.step-1", b'{"page":1}')
    await checkpoints.put("r3.step-1", b'{"page":3}')
    reads: list[list[str]] = []
    read_many = MemoryKeyValue.get_many

    async def counted(kv: MemoryKeyValue, keys: Sequence[str]) -> dict[str, KvEntry]:
        reads.append(sorted(keys))
        return await read_many(kv, keys)

    monkeypatch.setattr(MemoryKeyValue, "get_many", counted)

    tasks = await bridge.poll_now(WORK, max_tasks=3)

    assert {task.run_id: task.checkpoint for task in tasks} == {
        "r1": b'{"page":1}',
        "r2": None,
        "r3": b'{"page":3}',
    }
    assert reads == [["r1.step-1", "r2.step-1", "r3.step-1"]]


async def test_a_checkpoint_read_that_faults_leaves_the_checkpoints_out_of_the_poll(
    bridge: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for run_id in ("r1", "r2"):
        await enqueue(bridge, run_id)
    checkpoints = await bridge.buckets.checkpoints()
    assert checkpoints is not None
    await checkpoints.put("r1.step-1", b"1")

    async def unreachable(kv: MemoryKeyValue, keys: Sequence[str]) -> dict[str, KvEntry]:
        raise BackendUnavailableError("checkpoints away")

    monkeypatch.setattr(MemoryKeyValue, "get_many", unreachable)

    tasks = await bridge.poll_now(WORK, max_tasks=2)

    assert [(task.run_id, task.checkpoint) for task in tasks] == [("r1", None), ("r2", None)]
    assert "checkpoints of r1.step-1, r2.step-1 not read: checkpoints away" in caplog.text


async def test_a_task_whose_id_is_no_kv_key_leaves_the_others_checkpoints_alone(
    bridge: Harness,
) -> None:
    await enqueue(bridge, "r1")
    await bridge.queue.publish_task(
        WORK, TaskPayload(run_id=RunId("r2"), step_id=StepId("bad step")), msg_id="m2"
    )
    checkpoints = await bridge.buckets.checkpoints()
    assert checkpoints is not None
    await checkpoints.put("r1.step-1", b"1")

    tasks = await bridge.poll_now(WORK, max_tasks=2)

    assert [(task.task_id, task.checkpoint) for task in tasks] == [
        ("r1.step-1", b"1"),
        ("r2.bad step", None),
    ]


async def test_a_redelivery_carries_the_checkpoint_its_earlier_holder_saved_until_fenced(
    bridge: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)
    await bridge.resolve_action(task, "checkpoint", data=RawJson(b'"early"'))
    bridge.clock.advance(ACK_WAIT + timedelta(seconds=1))
    checkpoints = await bridge.buckets.checkpoints()
    assert checkpoints is not None
    read_lease = MemoryLeaseStore.get

    async def saved_late(store: MemoryLeaseStore, task_id: TaskId) -> Lease | None:
        # The earlier holder saves once more, as the redelivery looks its lease up to fence it.
        await checkpoints.put(task_id, b'"late"')
        return await read_lease(store, task_id)

    monkeypatch.setattr(MemoryLeaseStore, "get", saved_late)

    (again,) = await bridge.poll_now(WORK)

    assert (again.attempt, again.checkpoint) == (2, b'"late"')


async def test_extending_actions_move_the_lease_deadline_from_the_last_extension(
    bridge: Harness,
) -> None:
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)

    for _ in range(3):
        bridge.clock.advance(ACK_WAIT - timedelta(seconds=1))
        await bridge.resolve_action(task, "heartbeat")
    (streamed,) = [
        await bridge.resolve_action(task, "stream", data=RawJson(b'"chunk"')),
    ]

    assert streamed.replayed is False
    assert await bridge.poll_now(WORK) == []
    assert bridge.streams.chunks(RunId("r1"), StepId("step-1")) == [b'"chunk"']
    await bridge.resolve_action(task, "complete")


async def test_a_lease_expires_ack_wait_plus_30_s_after_its_last_extension(
    bridge: Harness,
) -> None:
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)

    bridge.clock.advance(ACK_WAIT + timedelta(seconds=30))

    with pytest.raises(TaskNotFoundError):
        await bridge.resolve_action(task, "complete")


async def test_a_redelivered_task_fences_the_old_lease_out(bridge: Harness) -> None:
    await enqueue(bridge)
    (old,) = await bridge.poll_now(WORK)
    bridge.clock.advance(ACK_WAIT)
    (new,) = await bridge.poll_now(WORK)

    with pytest.raises(StaleLeaseError):
        await bridge.resolve_action(old, "complete", lease_id=old.lease_id)

    assert new.attempt == 2
    await bridge.resolve_action(new, "complete", lease_id=new.lease_id)
    completed = [e for e in await bridge.events.read(RunId("r1")) if e.type == STEP_COMPLETED]
    assert [e.attempt_number for e in completed] == [2]


async def test_wait_signal_answers_a_signal_that_arrives_later(bridge: Harness) -> None:
    await enqueue(bridge, "r1")
    await enqueue(bridge, "r2")
    waiter, sender = await bridge.poll_now(WORK, max_tasks=2)

    waiting = asyncio.ensure_future(
        bridge.resolve_action(waiter, "wait_signal", name="go", timeout_ms=60_000)
    )
    await bridge.clock.wait_for_sleepers()
    await bridge.resolve_action(sender, "send_signal", run_id="r1", name="go", data=RawJson(b"1"))

    resolution = await asyncio.wait_for(waiting, 1)
    assert resolution.signal == b"1"


async def test_wait_signal_extends_the_lease_while_it_waits_then_times_out(
    bridge: Harness,
) -> None:
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)
    before = await bridge.leases.get(task.task_id)

    waiting = asyncio.ensure_future(
        bridge.resolve_action(task, "wait_signal", name="never", timeout_ms=20_000)
    )
    await bridge.clock.wait_for_sleepers()
    bridge.clock.advance(timedelta(seconds=15))
    await bridge.clock.wait_for_sleepers()
    during = await bridge.leases.get(task.task_id)
    bridge.clock.advance(timedelta(seconds=5))

    with pytest.raises(SignalTimeoutError):
        await asyncio.wait_for(waiting, 1)
    assert before is not None
    assert during is not None
    assert during.deadline - before.deadline == timedelta(seconds=15)


async def test_actions_that_need_a_missing_bucket_fail_clearly() -> None:
    clock = ManualClock()
    bridge = Harness(clock=clock, buckets=MemoryBuckets(clock, checkpoints=False, signals=False))
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)

    with pytest.raises(BucketUnavailableError, match="checkpoint KV not configured"):
        await bridge.resolve_action(task, "checkpoint", data=RawJson(b"1"))
    with pytest.raises(BucketUnavailableError, match="signal KV not configured"):
        await bridge.resolve_action(task, "send_signal", run_id="r1", name="n", data=RawJson(b"1"))


async def test_a_worker_stays_registered_until_its_last_session_closes(bridge: Harness) -> None:
    registry = WorkerRegistry(KvWorkerDirectory(buckets=bridge.buckets), bridge.clock)
    cmd = ConnectCommand(worker_id=WorkerId("w1"), task_types=[WORK], max_tasks=2)

    await registry.open_session(cmd)
    await registry.open_session(cmd)
    await registry.close_session(cmd.worker_id)
    still = await registry.registered()
    await registry.close_session(cmd.worker_id)

    assert [(r.worker_id, r.language, r.transport, r.max_tasks) for r in still] == [
        ("w1", "http", "bridge", 2)
    ]
    assert await registry.registered() == []


async def test_trace_context_travels_from_the_task_message_to_the_poll_answer_and_events(
    bridge: Harness,
) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await bridge.queue.publish_raw(
        WORK,
        b'{"run_id":"r1","step_id":"s"}',
        run_id=RunId("r1"),
        msg_id="m1",
        headers={"traceparent": traceparent, "tracestate": "k=v"},
    )

    (task,) = await bridge.poll_now(WORK)
    await bridge.resolve_action(task, "complete")

    assert (task.traceparent, task.tracestate) == (traceparent, "k=v")
    outbound = bridge.events.outbound(RunId("r1"))
    assert [o.headers.get("traceparent") for o in outbound] == [traceparent, traceparent]


async def test_a_worker_id_on_resolve_is_carried_by_the_terminal_event(bridge: Harness) -> None:
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)

    await bridge.resolve_action(task, "complete", worker_id="w9")

    completed = (await bridge.events.read(RunId("r1")))[-1]
    assert completed.worker_id == "w9"


@attrs.define
class AckFailsOnce(PassThroughQueue):
    """The memory queue, except that the first ack finds the broker away."""

    failed: bool = False

    async def ack(self, handle: DeliveryHandle) -> None:
        if not self.failed:
            self.failed = True
            raise BackendUnavailableError("NATS away")
        await self.inner.ack(handle)


async def test_a_terminal_action_that_fails_before_its_event_leaves_the_task_open() -> None:
    clock = ManualClock()
    bridge = Harness(clock=clock, buckets=MemoryBuckets(clock, checkpoints=False))
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)

    with pytest.raises(BucketUnavailableError):
        await bridge.resolve_action(task, "pause", duration_ms=1_000, name="approval")
    await bridge.resolve_action(task, "heartbeat")
    completed = await bridge.resolve_action(task, "complete")

    assert completed.replayed is False
    assert [e.type for e in await bridge.events.read(RunId("r1"))][-1] == STEP_COMPLETED


async def test_a_retry_after_a_failed_ack_acks_without_publishing_again(bridge: Harness) -> None:
    flaky = AckFailsOnce(bridge.queue)
    resolve = attrs.evolve(bridge.resolve, queue=flaky)
    await enqueue(bridge)
    (task,) = await bridge.poll_now(WORK)
    request = ResolveRequest(action="complete", lease_id=task.lease_id)

    with pytest.raises(BackendUnavailableError):
        await resolve(task.task_id, request)
    bridge.clock.advance(timedelta(seconds=10))
    retried = await resolve(task.task_id, request)

    assert retried.replayed is False
    completed = [e for e in await bridge.events.read(RunId("r1")) if e.type == STEP_COMPLETED]
    assert len(completed) == 1
    assert bridge.queue.messages() == []
