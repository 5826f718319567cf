"""Decision 13 on the memory adapters: a repeat of a poll with the same poll_id answers the
same tasks and leases for 60 s, instead of fetching new ones."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from domain.models import PollId, RunId, TaskType
from domain.protocol import POLL_REPLAY_WINDOW, STEP_STARTED
from domain.services.flag import Flag
from domain.services.poll import PollCommand
from domain.services.simulator import EnqueueCommand
from tests.factories import Harness

WORK = TaskType("work")


@pytest.fixture
def bridge() -> Harness:
    return Harness()


async def enqueue(bridge: Harness, *run_ids: str) -> None:
    for run_id in run_ids:
        await bridge.enqueue(EnqueueCommand(task_type=WORK, run_id=RunId(run_id)))


def long_poll(bridge: Harness, poll_id: str, max_tasks: int = 1) -> asyncio.Future[object]:
    return asyncio.ensure_future(
        bridge.poll(
            PollCommand(
                task_types=[WORK],
                max_tasks=max_tasks,
                timeout=timedelta(seconds=30),
                poll_id=PollId(poll_id),
            )
        )
    )


async def test_a_repeated_poll_id_answers_the_same_tasks_and_leases_and_fetches_nothing(
    bridge: Harness,
) -> None:
    await enqueue(bridge, "r1", "r2", "r3")
    first = await bridge.poll_now(WORK, max_tasks=2, poll_id="p-1")

    repeat = await bridge.poll_now(WORK, max_tasks=2, poll_id="p-1")

    assert repeat == first
    assert [t.run_id for t in first] == ["r1", "r2"]
    assert [m.delivery_count for m in bridge.queue.messages()] == [1, 1, 0]
    assert [e.type for e in await bridge.events.read(RunId("r1"))] == [STEP_STARTED]


async def test_another_poll_id_fetches_anew(bridge: Harness) -> None:
    await enqueue(bridge, "r1", "r2")
    first = await bridge.poll_now(WORK, poll_id="p-1")

    other = await bridge.poll_now(WORK, poll_id="p-2")

    assert [t.run_id for t in first + other] == ["r1", "r2"]


async def test_after_the_window_a_repeat_fetches_anew(bridge: Harness) -> None:
    await enqueue(bridge, "r1", "r2")
    first = await bridge.poll_now(WORK, poll_id="p-1")
    bridge.clock.advance(POLL_REPLAY_WINDOW - timedelta(microseconds=1))
    within = await bridge.poll_now(WORK, poll_id="p-1")

    bridge.clock.advance(timedelta(microseconds=1))
    after = await bridge.poll_now(WORK, poll_id="p-1")

    assert within == first
    assert [t.run_id for t in after] == ["r2"]


async def test_a_task_settled_since_is_left_out_of_the_replay(bridge: Harness) -> None:
    await enqueue(bridge, "r1", "r2")
    done, open_task = await bridge.poll_now(WORK, max_tasks=2, poll_id="p-1")
    await bridge.resolve_action(done, "complete")

    repeat = await bridge.poll_now(WORK, max_tasks=2, poll_id="p-1")

    assert repeat == [open_task]


async def test_a_task_redelivered_since_is_left_out_of_the_replay(bridge: Harness) -> None:
    await enqueue(bridge, "r1")
    (paused,) = await bridge.poll_now(WORK, poll_id="p-1")
    await bridge.resolve_action(paused, "pause", duration_ms=1_000)
    bridge.clock.advance(timedelta(seconds=1))
    (redelivered,) = await bridge.poll_now(WORK, poll_id="p-2")

    repeat = await bridge.poll_now(WORK, poll_id="p-1")

    assert repeat == []
    assert redelivered.lease_id != paused.lease_id


async def test_a_poll_that_found_nothing_is_not_kept(bridge: Harness) -> None:
    empty = await bridge.poll_now(WORK, poll_id="p-1")
    await enqueue(bridge, "r1")

    repeat = await bridge.poll_now(WORK, poll_id="p-1")

    assert empty == []
    assert [t.run_id for t in repeat] == ["r1"]


async def test_a_concurrent_duplicate_waits_for_the_first_and_replays_its_answer(
    bridge: Harness,
) -> None:
    first = long_poll(bridge, "p-1")
    await bridge.clock.wait_for_sleepers()
    duplicate = long_poll(bridge, "p-1")

    await enqueue(bridge, "r1", "r2")

    answers = await asyncio.wait_for(asyncio.gather(first, duplicate), 1)
    assert answers[0] == answers[1]
    assert [m.delivery_count for m in bridge.queue.messages()] == [1, 0]
    assert bridge.clock.sleepers == 0


async def test_an_abandoned_poll_is_not_kept_so_its_repeat_polls_anew(bridge: Harness) -> None:
    await enqueue(bridge, "r1")
    gone = Flag()
    gone.set()

    abandoned = await bridge.poll(
        PollCommand(
            task_types=[WORK],
            max_tasks=1,
            timeout=timedelta(0),
            poll_id=PollId("p-1"),
            abandoned=gone,
        )
    )
    repeat = await bridge.poll_now(WORK, poll_id="p-1")

    assert abandoned == []
    assert [(t.run_id, t.attempt) for t in repeat] == [("r1", 2)]
