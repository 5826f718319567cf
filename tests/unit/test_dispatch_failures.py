"""A dispatch stores the lease and publishes step.started at once: if either fails, no lease is
left and the task comes back once, DISPATCH_FAILURE_DELAY later."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs
import pytest

from adapters.memory.leases import MemoryLeaseStore
from domain.errors import BackendUnavailableError
from domain.models import Lease, RunId
from domain.protocol import DISPATCH_FAILURE_DELAY, STEP_STARTED
from domain.services.simulator import EnqueueCommand
from tests.factories import Harness, UnreachableEventLog

WORK = "work"
RUN = RunId("r1")


@attrs.define
class UnwritableLeaseStore(MemoryLeaseStore):
    """The memory store whose puts fail, as a KV away would."""

    async def put(self, lease: Lease) -> Lease:
        raise BackendUnavailableError("leases are away")


@pytest.fixture
async def bridge() -> Harness:
    harness = Harness()
    await harness.enqueue(EnqueueCommand(task_type=WORK, run_id=RUN))  # type: ignore[arg-type]
    return harness


async def a_poll_fails(bridge: Harness, match: str | None, **broken: Any) -> None:
    """A poll with the `broken` ports of the poll use case fails (its error matching `match`);
    the working ones are put back after it."""
    working = bridge.poll
    bridge.poll = attrs.evolve(working, **broken)

    with pytest.raises(BackendUnavailableError, match=match):
        await bridge.poll_now(WORK)
    bridge.poll = working


async def comes_back_once_after_the_delay(bridge: Harness) -> bool:
    bridge.clock.advance(DISPATCH_FAILURE_DELAY - timedelta(microseconds=1))
    early = await bridge.poll_now(WORK)
    bridge.clock.advance(timedelta(microseconds=1))
    again = await bridge.poll_now(WORK, max_tasks=2)
    return early == [] and [task.run_id for task in again] == [RUN]


async def test_a_step_started_not_published_drops_the_lease_and_gives_the_task_back(
    bridge: Harness,
) -> None:
    await a_poll_fails(bridge, "history", events=UnreachableEventLog())

    assert await bridge.leases.count() == 0
    assert await comes_back_once_after_the_delay(bridge)


async def test_a_lease_not_stored_gives_the_task_back(bridge: Harness) -> None:
    await a_poll_fails(bridge, "leases", leases=UnwritableLeaseStore(bridge.clock))

    assert await bridge.leases.count() == 0
    assert await comes_back_once_after_the_delay(bridge)


async def test_both_failing_give_the_task_back_once(bridge: Harness) -> None:
    await a_poll_fails(
        bridge, None, events=UnreachableEventLog(), leases=UnwritableLeaseStore(bridge.clock)
    )

    assert await comes_back_once_after_the_delay(bridge)


async def test_a_task_handed_out_has_its_lease_and_its_step_started(bridge: Harness) -> None:
    (task,) = await bridge.poll_now(WORK)

    lease = await bridge.leases.get(task.task_id)
    assert lease is not None
    assert lease.lease_id == task.lease_id
    assert [event.type for event in await bridge.events.read(RUN)] == [STEP_STARTED]
