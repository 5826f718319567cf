"""A terminal resolve starts from the lease this process last knew (`LeaseStore.recent`),
which another process may have changed since: it must answer as the stored lease says."""

from __future__ import annotations

from typing import Final

import attrs
import pytest

from adapters.memory.leases import MemoryLeaseStore
from domain.errors import AlreadySettledError
from domain.models import Lease, LeaseState, PolledTask, RunId, TaskId, TaskType
from domain.services.simulator import EnqueueCommand
from tests.factories import Harness

WORK: Final = TaskType("work")


@attrs.define
class Remembering(MemoryLeaseStore):
    """`recent` answers what was seen at `remember`, as the store of another process could."""

    seen: dict[TaskId, Lease] = attrs.field(factory=dict)

    def remember(self, lease: Lease) -> None:
        self.seen[lease.task_id] = lease

    def recent(self, task_id: TaskId) -> Lease | None:
        return self.seen.get(task_id)


async def one_task() -> tuple[Harness, Remembering, PolledTask, Lease]:
    harness = Harness()
    leases = Remembering(harness.clock)
    harness.poll = attrs.evolve(harness.poll, leases=leases)
    harness.resolve = attrs.evolve(harness.resolve, leases=leases)
    await harness.enqueue(EnqueueCommand(task_type=WORK, run_id=RunId("r1")))
    (task,) = await harness.poll_now(WORK)
    stored = await leases.get(task.task_id)
    assert stored is not None
    return harness, leases, task, stored


async def test_a_lease_last_seen_being_claimed_by_another_action_is_read_again() -> None:
    """That claim was given up since (its publish was refused): the task is open."""
    harness, leases, task, stored = await one_task()
    leases.remember(attrs.evolve(stored, state=LeaseState.SETTLING, terminal_action="fail"))

    done = await harness.resolve_action(task, "complete", lease_id=task.lease_id)

    assert done.replayed is False
    assert [event.type for event in await harness.events.read(RunId("r1"))] == [
        "step.started",
        "step.completed",
    ]


async def test_a_lease_last_seen_active_but_settled_since_answers_as_the_stored_one() -> None:
    harness, leases, task, stored = await one_task()
    leases.remember(stored)
    await harness.resolve_action(task, "complete", lease_id=task.lease_id)

    replay = await harness.resolve_action(task, "complete")
    with pytest.raises(AlreadySettledError):
        await harness.resolve_action(task, "fail")

    assert replay.replayed is True
