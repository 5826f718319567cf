"""MemoryLeaseStore: what only the memory store has, its store-wide revision counter.

The scenarios both lease stores share run against it in
tests/integration/test_lease_store_contract.py.
"""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from adapters.memory.clock import ManualClock
from adapters.memory.leases import EXPIRIES_MINIMUM, EXPIRIES_SLACK, MemoryLeaseStore
from domain.models import LeaseState, TaskId
from tests.lease_builders import TASK, lease


@pytest.fixture
def store() -> MemoryLeaseStore:
    return MemoryLeaseStore(ManualClock())


async def test_put_stores_the_lease_with_the_next_store_revision(store: MemoryLeaseStore) -> None:
    first = await store.put(attrs.evolve(lease(), revision=99))
    second = await store.put(lease("lease-9", task_id=TaskId("run-1.s2")))

    assert (first.revision, second.revision) == (1, 2)
    assert await store.get(TASK) == attrs.evolve(lease(), revision=1)


async def test_replace_stores_the_lease_with_the_next_store_revision(
    store: MemoryLeaseStore,
) -> None:
    stored = await store.put(lease())

    replaced = await store.replace(attrs.evolve(stored, state=LeaseState.SETTLING))

    assert replaced.revision == stored.revision + 1
    assert await store.get(TASK) == replaced


async def test_a_write_forgets_the_leases_whose_deadline_has_come_and_only_those() -> None:
    clock = ManualClock()
    store = MemoryLeaseStore(clock)
    short = await store.put(lease("lease-1", task_id=TaskId("run-1.short")))
    extended = await store.put(lease("lease-2", task_id=TaskId("run-1.extended")))
    extended = await store.replace(
        attrs.evolve(extended, deadline=extended.deadline + timedelta(minutes=5))
    )
    clock.advance(short.deadline - clock.now())

    await store.put(lease("lease-3", task_id=TaskId("run-1.new")))

    assert set(store._leases) == {TaskId("run-1.extended"), TaskId("run-1.new")}


async def test_the_expiry_heap_stays_within_a_few_entries_a_lease_whatever_the_writes() -> None:
    store = MemoryLeaseStore(ManualClock())
    held = await store.put(lease())
    for _ in range(1_000):
        held = await store.replace(attrs.evolve(held, deadline=held.deadline + timedelta(1)))
    for number in range(1_000):
        other = await store.put(lease(f"lease-{number}", task_id=TaskId(f"run-1.t{number}")))
        await store.delete(other.task_id, other.lease_id)

    assert len(store._expiries) <= EXPIRIES_SLACK * 1 + EXPIRIES_MINIMUM + 1
    assert await store.get(TASK) == held
