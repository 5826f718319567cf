"""Decision 12 on the memory adapters: a connected worker's max_tasks caps its leases in
flight, and its leases are given back at once when its last connect stream closes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import attrs
import pytest

from domain.errors import AlreadySettledError, BackendUnavailableError
from domain.models import DeliveryHandle, LeaseState, RunId, TaskType, WorkerId
from domain.protocol import STEP_STARTED
from domain.services.actions import ResolveRequest
from domain.services.locks import KeyedLocks
from domain.services.poll import PollCommand
from domain.services.release import RELEASE, ReleaseLeases
from domain.services.simulator import EnqueueCommand
from domain.services.workers import ConnectCommand
from tests.factories import Harness, PassThroughQueue

WORK = TaskType("work")
W1 = WorkerId("w1")


@pytest.fixture
def bridge() -> Harness:
    return Harness()


async def enqueue(bridge: Harness, *run_ids: str) -> None:
    for run_id in run_ids:
        await bridge.enqueue(EnqueueCommand(task_type=WORK, run_id=RunId(run_id)))


async def connect(bridge: Harness, max_tasks: int, worker_id: WorkerId = W1) -> None:
    cmd = ConnectCommand(worker_id=worker_id, task_types=[WORK], max_tasks=max_tasks)
    await bridge.workers.open_session(cmd)


async def test_a_connected_worker_never_holds_more_leases_than_its_max_tasks(
    bridge: Harness,
) -> None:
    await connect(bridge, max_tasks=2)
    await enqueue(bridge, "r1", "r2", "r3", "r4")

    first = await bridge.poll_now(WORK, max_tasks=1, worker_id=W1)
    second = await bridge.poll_now(WORK, max_tasks=5, worker_id=W1)
    at_cap = await bridge.poll_now(WORK, max_tasks=5, worker_id=W1)
    await bridge.resolve_action(first[0], "complete")
    after_one_settled = await bridge.poll_now(WORK, max_tasks=5, worker_id=W1)

    assert [t.run_id for t in first] == ["r1"]
    assert [t.run_id for t in second] == ["r2"]
    assert at_cap == []
    assert [t.run_id for t in after_one_settled] == ["r3"]
    assert len(await bridge.leases.held_by(W1)) == 2
    settled = await bridge.leases.get(first[0].task_id)  # kept for replays, held no more
    assert settled is not None
    assert settled.state is LeaseState.SETTLED


async def test_a_poll_at_the_cap_answers_at_once_without_fetching(bridge: Harness) -> None:
    await connect(bridge, max_tasks=1)
    await enqueue(bridge, "r1", "r2")
    await bridge.poll_now(WORK, worker_id=W1)

    at_cap = await asyncio.wait_for(
        bridge.poll(
            PollCommand(task_types=[WORK], max_tasks=1, timeout=timedelta(seconds=30), worker_id=W1)
        ),
        1,
    )

    assert at_cap == []
    assert bridge.clock.sleepers == 0
    (untouched,) = await bridge.poll_now(WORK)  # never delivered by the poll at the cap
    assert (untouched.run_id, untouched.attempt) == ("r2", 1)


async def test_a_waiting_poll_answers_empty_once_a_sibling_poll_fills_the_cap(
    bridge: Harness,
) -> None:
    await connect(bridge, max_tasks=1)
    waiting = asyncio.ensure_future(
        bridge.poll(
            PollCommand(task_types=[WORK], max_tasks=1, timeout=timedelta(seconds=30), worker_id=W1)
        )
    )
    await bridge.clock.wait_for_sleepers()
    # Another poll of the worker takes the one slot between the task's arrival and the wake-up.
    await enqueue(bridge, "r1", "r2")
    taken = await bridge.poll_now(WORK, worker_id=W1)

    assert [t.run_id for t in taken] == ["r1"]
    assert await asyncio.wait_for(waiting, 1) == []
    assert [m.delivery_count for m in bridge.queue.messages()] == [1, 0]


async def test_concurrent_polls_of_one_worker_take_no_more_than_its_cap_together(
    bridge: Harness,
) -> None:
    await connect(bridge, max_tasks=3)
    await enqueue(bridge, "r1", "r2", "r3", "r4", "r5")

    answers = await asyncio.gather(
        *(bridge.poll_now(WORK, max_tasks=2, worker_id=W1) for _ in range(3))
    )

    assert sorted(len(answer) for answer in answers) == [0, 1, 2]


async def test_a_worker_id_that_is_not_connected_is_served_without_a_cap(
    bridge: Harness,
) -> None:
    await enqueue(bridge, "r1", "r2", "r3")

    tasks = await bridge.poll_now(WORK, max_tasks=3, worker_id="stranger")

    assert len(tasks) == 3
    assert {lease.worker_id for lease in await bridge.leases.held_by(WorkerId("stranger"))} == {
        "stranger"
    }


async def test_the_worker_id_of_the_poll_is_carried_by_step_started(bridge: Harness) -> None:
    await connect(bridge, max_tasks=1)
    await enqueue(bridge, "r1")

    await bridge.poll_now(WORK, worker_id=W1)

    (started,) = await bridge.events.read(RunId("r1"))
    assert (started.type, started.worker_id) == (STEP_STARTED, W1)


async def test_the_last_session_closing_releases_the_workers_tasks_at_once(
    bridge: Harness,
) -> None:
    await connect(bridge, max_tasks=2)
    await enqueue(bridge, "r1", "r2")
    held = await bridge.poll_now(WORK, max_tasks=2, worker_id=W1)

    await bridge.workers.close_session(W1)
    again = await bridge.poll_now(WORK, max_tasks=2)

    assert sorted(t.run_id for t in again) == sorted(t.run_id for t in held) == ["r1", "r2"]
    assert [t.attempt for t in again] == [2, 2]
    assert await bridge.leases.held_by(W1) == []
    stale = await asyncio.gather(
        *(bridge.resolve_action(t, "complete", lease_id=t.lease_id) for t in held),
        return_exceptions=True,
    )
    assert all(isinstance(outcome, Exception) for outcome in stale)


async def test_other_sessions_of_the_worker_keep_its_leases(bridge: Harness) -> None:
    await connect(bridge, max_tasks=2)
    await connect(bridge, max_tasks=2)
    await enqueue(bridge, "r1")
    (task,) = await bridge.poll_now(WORK, worker_id=W1)

    await bridge.workers.close_session(W1)

    assert await bridge.poll_now(WORK) == []
    assert (await bridge.resolve_action(task, "complete", lease_id=task.lease_id)).replayed is False


async def test_a_release_leaves_settled_and_settling_leases_alone(bridge: Harness) -> None:
    await connect(bridge, max_tasks=3)
    await enqueue(bridge, "r1", "r2", "r3")
    done, settling, active = await bridge.poll_now(WORK, max_tasks=3, worker_id=W1)
    await bridge.resolve_action(done, "complete")
    lease = await bridge.leases.get(settling.task_id)
    assert lease is not None
    await bridge.leases.replace(
        attrs.evolve(lease, state=LeaseState.SETTLING, terminal_action="complete")
    )

    await bridge.workers.close_session(W1)

    assert [t.run_id for t in await bridge.poll_now(WORK, max_tasks=3)] == [active.run_id]
    assert (await bridge.resolve_action(done, "complete")).replayed is True
    still = await bridge.leases.get(settling.task_id)
    assert still is not None
    assert (still.state, still.terminal_action) == (LeaseState.SETTLING, "complete")


@attrs.define
class BeforeNak(PassThroughQueue):
    """The memory queue, running `hook` before each NAK (to interleave another replica)."""

    hook: Callable[[], Awaitable[None]]

    async def nak(self, handle: DeliveryHandle, delay: timedelta) -> None:
        await self.hook()
        await self.inner.nak(handle, delay)


async def test_a_resolve_on_another_replica_during_a_release_is_refused(
    bridge: Harness,
) -> None:
    """The lease is claimed before the NAK, so no event is published for a NAKed delivery."""
    await connect(bridge, max_tasks=1)
    await enqueue(bridge, "r1")
    (task,) = await bridge.poll_now(WORK, worker_id=W1)
    other_replica = attrs.evolve(bridge.resolve, locks=KeyedLocks())
    outcomes: list[BaseException | None] = []

    async def resolve_elsewhere() -> None:
        try:
            await other_replica(task.task_id, ResolveRequest(action="complete"))
            outcomes.append(None)
        except AlreadySettledError as exc:
            outcomes.append(exc)

    release = ReleaseLeases(
        queue=BeforeNak(bridge.queue, resolve_elsewhere),
        leases=bridge.leases,
        locks=bridge.resolve.locks,
    )
    released = await release.of_worker(W1)

    assert released == 1
    (refused,) = outcomes
    assert isinstance(refused, AlreadySettledError)
    assert RELEASE in str(refused)
    assert [e.type for e in await bridge.events.read(RunId("r1"))] == [STEP_STARTED]
    (again,) = await bridge.poll_now(WORK)
    assert again.attempt == 2


async def test_a_release_whose_nak_fails_leaves_the_lease_to_its_worker(bridge: Harness) -> None:
    await connect(bridge, max_tasks=1)
    await enqueue(bridge, "r1")
    (task,) = await bridge.poll_now(WORK, worker_id=W1)

    async def broker_away() -> None:
        raise BackendUnavailableError("NATS away")

    release = ReleaseLeases(
        queue=BeforeNak(bridge.queue, broker_away),
        leases=bridge.leases,
        locks=bridge.resolve.locks,
    )
    released = await release.of_worker(W1)

    assert released == 0
    lease = await bridge.leases.get(task.task_id)
    assert lease is not None
    assert lease.state is LeaseState.ACTIVE
    assert (await bridge.resolve_action(task, "complete")).replayed is False
