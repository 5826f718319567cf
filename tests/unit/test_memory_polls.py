"""MemoryPollAnswerStore: answers by poll_id, kept for the replay window on the clock."""

from __future__ import annotations

from datetime import timedelta

from adapters.memory.clock import ManualClock
from adapters.memory.polls import MemoryPollAnswerStore
from domain.models import LeaseId, PolledTask, PollId, RunId, StepId, TaskId
from domain.protocol import POLL_REPLAY_WINDOW


def polled(step: str) -> PolledTask:
    return PolledTask(
        task_id=TaskId(f"r1.{step}"),
        run_id=RunId("r1"),
        step_id=StepId(step),
        attempt=1,
        lease_id=LeaseId(f"lease-{step}"),
    )


async def test_an_answer_reads_back_until_the_window_has_passed() -> None:
    clock = ManualClock()
    store = MemoryPollAnswerStore(clock)
    await store.put(PollId("p"), [polled("a"), polled("b")])

    clock.advance(POLL_REPLAY_WINDOW - timedelta(microseconds=1))
    within = await store.get(PollId("p"))
    clock.advance(timedelta(microseconds=1))

    assert within == [polled("a"), polled("b")]
    assert await store.get(PollId("p")) is None


async def test_a_later_put_replaces_the_answer_and_restarts_its_window() -> None:
    clock = ManualClock()
    store = MemoryPollAnswerStore(clock)
    await store.put(PollId("p"), [polled("a")])
    clock.advance(timedelta(seconds=30))

    await store.put(PollId("p"), [polled("b")])
    clock.advance(timedelta(seconds=59))

    assert await store.get(PollId("p")) == [polled("b")]
    assert await store.get(PollId("unknown")) is None
