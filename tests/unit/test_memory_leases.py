"""MemoryLeaseStore: leases by task id with compare-and-set and expiry on the clock."""

from __future__ import annotations

from datetime import timedelta

import attrs
import pytest

from adapters.memory.clock import EPOCH, ManualClock
from adapters.memory.leases import MemoryLeaseStore
from domain.errors import LeaseRevisionError
from domain.models import (
    DeliveryHandle,
    Lease,
    LeaseId,
    LeaseState,
    RunId,
    StepId,
    TaskId,
    TaskType,
    WorkerId,
)

TASK = TaskId("run-1.s1")
LIFETIME = timedelta(minutes=5, seconds=30)


def lease(lease_id: str = "lease-1", task_id: TaskId = TASK, revision: int = 0) -> Lease:
    return Lease(
        task_id=task_id,
        run_id=RunId("run-1"),
        step_id=StepId(task_id.rsplit(".", 1)[-1]),
        task_type=TaskType("email"),
        lease_id=LeaseId(lease_id),
        handle=DeliveryHandle("TASK_QUEUES:1:1"),
        attempt=1,
        iteration=0,
        delivery_count=1,
        ack_wait=timedelta(minutes=5),
        deadline=EPOCH + LIFETIME,
        revision=revision,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store(clock: ManualClock) -> MemoryLeaseStore:
    return MemoryLeaseStore(clock)


async def test_put_stores_the_lease_with_the_next_store_revision(store: MemoryLeaseStore) -> None:
    first = await store.put(lease(revision=99))
    second = await store.put(lease("lease-9", task_id=TaskId("run-1.s2")))

    assert (first.revision, second.revision) == (1, 2)
    assert await store.get(TASK) == attrs.evolve(lease(), revision=1)


async def test_an_absent_task_has_no_lease(store: MemoryLeaseStore) -> None:
    assert await store.get(TASK) is None


async def test_a_lease_reads_as_absent_once_its_deadline_comes(
    store: MemoryLeaseStore, clock: ManualClock
) -> None:
    await store.put(lease())

    clock.advance(LIFETIME - timedelta(microseconds=1))
    before = await store.get(TASK)
    clock.advance(timedelta(microseconds=1))

    assert before is not None
    assert await store.get(TASK) is None
    assert await store.count() == 0


async def test_replace_with_the_current_revision_stores_a_new_one(
    store: MemoryLeaseStore,
) -> None:
    stored = await store.put(lease())

    replaced = await store.replace(attrs.evolve(stored, state=LeaseState.SETTLING))

    assert replaced.revision == stored.revision + 1
    assert await store.get(TASK) == replaced


async def test_replace_with_a_stale_revision_is_refused(store: MemoryLeaseStore) -> None:
    stored = await store.put(lease())
    await store.replace(stored)

    with pytest.raises(LeaseRevisionError, match=TASK):
        await store.replace(attrs.evolve(stored, state=LeaseState.SETTLED))

    current = await store.get(TASK)
    assert current is not None
    assert current.state is LeaseState.ACTIVE


async def test_replace_of_a_lease_superseded_by_a_newer_one_is_refused(
    store: MemoryLeaseStore,
) -> None:
    old = await store.put(lease("lease-1"))
    newer = await store.put(lease("lease-2"))

    with pytest.raises(LeaseRevisionError):
        await store.replace(attrs.evolve(old, revision=newer.revision))


async def test_replace_of_an_expired_lease_is_refused(
    store: MemoryLeaseStore, clock: ManualClock
) -> None:
    stored = await store.put(lease())
    clock.advance(LIFETIME)

    with pytest.raises(LeaseRevisionError):
        await store.replace(stored)


async def test_replace_of_an_absent_lease_is_refused(store: MemoryLeaseStore) -> None:
    with pytest.raises(LeaseRevisionError):
        await store.replace(lease())


async def test_delete_forgets_only_the_named_lease(store: MemoryLeaseStore) -> None:
    await store.put(lease("lease-2"))

    await store.delete(TASK, "lease-1")
    kept = await store.get(TASK)
    await store.delete(TASK, "lease-2")

    assert kept is not None
    assert await store.get(TASK) is None


async def test_count_counts_unexpired_leases(store: MemoryLeaseStore, clock: ManualClock) -> None:
    await store.put(lease(task_id=TaskId("run-1.s1")))
    clock.advance(timedelta(minutes=1))
    await store.put(
        attrs.evolve(lease(task_id=TaskId("run-1.s2")), deadline=clock.now() + LIFETIME)
    )

    before = await store.count()
    clock.advance(LIFETIME - timedelta(minutes=1))

    assert before == 2
    assert await store.count() == 1


async def test_held_by_lists_the_live_leases_of_the_worker_in_any_state(
    store: MemoryLeaseStore, clock: ManualClock
) -> None:
    w1, w2 = WorkerId("w1"), WorkerId("w2")
    first = await store.put(attrs.evolve(lease("a", TaskId("r.a")), worker_id=w1))
    settled = await store.put(attrs.evolve(lease("b", TaskId("r.b")), worker_id=w1))
    settled = await store.replace(attrs.evolve(settled, state=LeaseState.SETTLED))
    await store.put(attrs.evolve(lease("c", TaskId("r.c")), worker_id=w2))
    await store.put(lease("d", TaskId("r.d")))

    held = await store.held_by(w1)
    clock.advance(LIFETIME)

    assert sorted(held, key=lambda held_lease: held_lease.task_id) == [first, settled]
    assert await store.held_by(w1) == []


async def test_held_by_follows_a_task_to_the_worker_of_its_newest_lease(
    store: MemoryLeaseStore,
) -> None:
    w1, w2 = WorkerId("w1"), WorkerId("w2")
    await store.put(attrs.evolve(lease("old"), worker_id=w1))

    newer = await store.put(attrs.evolve(lease("new"), worker_id=w2))

    assert await store.held_by(w1) == []
    assert await store.held_by(w2) == [newer]
    await store.delete(TASK, "new")
    assert await store.held_by(w2) == []
