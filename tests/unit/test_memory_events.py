"""MemoryEventLog: history events by run, deduplicated on msg-id within a window on the clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from adapters.memory.clock import EPOCH, ManualClock
from adapters.memory.events import MemoryEventLog
from domain.models import Event, OutboundEvent, RunId, StepId

SAFETY = 1.0
"""Real seconds a test waits before calling a hang a failure; never reached when it passes."""
TICK = timedelta(microseconds=1)


def outbound(msg_id: str, run_id: str = "run-1", event_type: str = "step.started") -> OutboundEvent:
    return OutboundEvent(
        event=Event(type=event_type, run_id=RunId(run_id), step_id=StepId("s1"), timestamp=EPOCH),
        msg_id=msg_id,
        headers={"traceparent": f"tp-{msg_id}"},
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def log(clock: ManualClock) -> MemoryEventLog:
    return MemoryEventLog(clock)


async def test_a_run_reads_its_events_in_append_order(log: MemoryEventLog) -> None:
    first, other_run, second = outbound("a"), outbound("b", run_id="run-2"), outbound("c")

    appended = [await log.append(e) for e in (first, other_run, second)]

    assert appended == [True, True, True]
    assert await log.read(RunId("run-1")) == [first.event, second.event]
    assert await log.read(RunId("run-2")) == [other_run.event]
    assert await log.read(RunId("run-3")) == []


async def test_stored_events_keep_their_msg_ids_and_headers(log: MemoryEventLog) -> None:
    await log.append(outbound("run-1.s1.step.started.1"))

    [stored] = log.outbound(RunId("run-1"))

    assert stored.msg_id == "run-1.s1.step.started.1"
    assert stored.headers == {"traceparent": "tp-run-1.s1.step.started.1"}


async def test_a_duplicate_within_the_window_is_dropped(
    log: MemoryEventLog, clock: ManualClock
) -> None:
    await log.append(outbound("dup", event_type="step.started"))
    clock.advance(timedelta(seconds=5) - TICK)

    appended = await log.append(outbound("dup", event_type="step.completed"))

    assert appended is False
    assert [e.type for e in await log.read(RunId("run-1"))] == ["step.started"]


async def test_the_window_runs_from_the_first_append_not_the_last_duplicate(
    log: MemoryEventLog, clock: ManualClock
) -> None:
    await log.append(outbound("dup"))
    clock.advance(timedelta(seconds=4))
    await log.append(outbound("dup"))
    clock.advance(timedelta(seconds=1))

    appended = await log.append(outbound("dup", event_type="step.completed"))

    assert appended is True
    assert [e.type for e in await log.read(RunId("run-1"))] == ["step.started", "step.completed"]


async def test_a_msg_id_appended_again_after_the_window_starts_a_new_window(
    log: MemoryEventLog, clock: ManualClock
) -> None:
    await log.append(outbound("dup"))
    clock.advance(timedelta(seconds=5))
    await log.append(outbound("dup"))
    clock.advance(timedelta(seconds=4))

    assert await log.append(outbound("dup")) is False


async def test_the_window_is_configurable(clock: ManualClock) -> None:
    log = MemoryEventLog(clock, duplicate_window=timedelta(minutes=1))
    await log.append(outbound("dup"))
    clock.advance(timedelta(seconds=30))

    assert await log.append(outbound("dup")) is False


async def test_an_empty_msg_id_is_never_a_duplicate(log: MemoryEventLog) -> None:
    assert await log.append(outbound(""))
    assert await log.append(outbound(""))
    assert len(await log.read(RunId("run-1"))) == 2


async def test_wait_for_events_wakes_once_the_run_has_enough(
    log: MemoryEventLog, clock: ManualClock
) -> None:
    waiting = asyncio.create_task(log.wait_for_events(RunId("run-1"), 2, timedelta(seconds=5)))
    await clock.wait_for_sleepers()

    await log.append(outbound("a"))
    await log.append(outbound("b", run_id="run-2"))
    await asyncio.sleep(0)
    early = waiting.done()
    await log.append(outbound("c"))

    events = await asyncio.wait_for(waiting, SAFETY)
    assert not early
    assert [e.run_id for e in events] == ["run-1", "run-1"]
    assert clock.sleepers == 0


async def test_wait_for_events_returns_what_there_is_at_the_timeout(
    log: MemoryEventLog, clock: ManualClock
) -> None:
    await log.append(outbound("a"))
    waiting = asyncio.create_task(log.wait_for_events(RunId("run-1"), 2, timedelta(seconds=5)))
    await clock.wait_for_sleepers()

    clock.advance(timedelta(seconds=5))

    assert len(await asyncio.wait_for(waiting, SAFETY)) == 1


async def finish(log: MemoryEventLog, run_id: str) -> None:
    await log.append(outbound(f"{run_id}.started", run_id=run_id))
    await log.append(
        outbound(f"{run_id}.completed", run_id=run_id, event_type="workflow.completed")
    )


async def test_beyond_the_runs_kept_the_history_of_the_run_that_finished_first_is_forgotten(
    clock: ManualClock,
) -> None:
    log = MemoryEventLog(clock, finished_kept=2)
    await log.append(outbound("running.started", run_id="running"))
    for run_id in ("r1", "r2", "r3"):
        await finish(log, run_id)

    kept = {run_id: len(await log.read(RunId(run_id))) for run_id in ("running", "r1", "r2", "r3")}

    assert kept == {"running": 1, "r1": 0, "r2": 2, "r3": 2}


async def test_a_finished_run_that_gets_another_event_runs_again_and_is_kept(
    clock: ManualClock,
) -> None:
    """A finished run id enqueued again is a new run under the same id."""
    log = MemoryEventLog(clock, finished_kept=1)
    await finish(log, "again")
    await log.append(outbound("again.started.2", run_id="again"))
    await finish(log, "r2")
    await finish(log, "r3")

    kept = {run_id: len(await log.read(RunId(run_id))) for run_id in ("again", "r2", "r3")}

    assert kept == {"again": 3, "r2": 0, "r3": 2}


async def test_a_run_ended_again_within_the_duplicate_window_counts_as_finished(
    clock: ManualClock,
) -> None:
    """Enqueued again under its id and ended at once: the end's msg-id is the first run's,
    so it is dropped, but the run has ended, and it is forgotten in its turn."""
    log = MemoryEventLog(clock, finished_kept=1)
    await finish(log, "again")
    await log.append(outbound("again.started.2", run_id="again"))
    dropped = await log.append(
        outbound("again.completed", run_id="again", event_type="workflow.completed")
    )
    await finish(log, "r2")

    kept = {run_id: len(await log.read(RunId(run_id))) for run_id in ("again", "r2")}

    assert (dropped, kept) == (False, {"again": 0, "r2": 2})
