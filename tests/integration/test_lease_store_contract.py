"""One spec, two backends: MemoryLeaseStore and NatsLeaseStore must agree on these scenarios.

Both run on a ManualClock: a lease's own deadline decides when it reads as absent. What only
one backend has (memory's store-wide revision counter; NATS's KV keys, revisions, second
connections and faults) is in test_memory_leases.py and test_nats_leases.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import attrs
import nats
import pytest

from adapters.memory.clock import ManualClock
from adapters.memory.leases import MemoryLeaseStore
from adapters.nats.jetstream import JetStream
from adapters.nats.leases import NatsLeaseStore
from app.embedded import EmbeddedNats
from domain.errors import LeaseRevisionError
from domain.models import LeaseId, LeaseState, TaskId, WorkerId
from domain.ports import LeaseStore
from tests.integration.kv_helpers import lease_bucket
from tests.lease_builders import LIFETIME, TASK, lease

pytestmark = pytest.mark.integration


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(params=["memory", "nats"])
async def store(
    request: pytest.FixtureRequest, nats_server: EmbeddedNats, clock: ManualClock
) -> AsyncIterator[LeaseStore]:
    if request.param == "memory":
        yield MemoryLeaseStore(clock)
        return
    client = await nats.connect(nats_server.url)
    try:
        async with lease_bucket(JetStream(client)) as kv:
            yield NatsLeaseStore(kv.js, clock=clock, bucket=kv.name)
    finally:
        await client.drain()


async def test_an_absent_task_has_no_lease(store: LeaseStore) -> None:
    assert await store.get(TASK) is None


async def test_a_lease_reads_as_absent_once_its_deadline_comes(
    store: LeaseStore, clock: ManualClock
) -> None:
    await store.put(lease())

    clock.advance(LIFETIME - timedelta(microseconds=1))
    before = await store.get(TASK)
    count_before = await store.count()
    clock.advance(timedelta(microseconds=1))

    assert before is not None
    assert count_before == 1
    assert await store.get(TASK) is None
    assert await store.count() == 0


async def test_replace_with_the_current_revision_stores_a_new_one(store: LeaseStore) -> None:
    stored = await store.put(lease())

    replaced = await store.replace(
        attrs.evolve(stored, state=LeaseState.SETTLING, terminal_action="complete")
    )

    assert replaced.revision > stored.revision
    assert await store.get(TASK) == replaced


async def test_recent_knows_what_this_process_wrote_until_it_expires(
    store: LeaseStore, clock: ManualClock
) -> None:
    stored = await store.put(lease())
    replaced = await store.replace(attrs.evolve(stored, state=LeaseState.SETTLING))

    assert store.recent(TASK) == replaced
    await store.delete(TASK, replaced.lease_id)
    assert store.recent(TASK) is None
    again = await store.put(lease())
    assert store.recent(TASK) == again
    clock.advance(LIFETIME)
    assert store.recent(TASK) is None


async def test_replace_with_a_stale_revision_is_refused(store: LeaseStore) -> None:
    stored = await store.put(lease())
    await store.replace(stored)

    with pytest.raises(LeaseRevisionError, match=TASK):
        await store.replace(attrs.evolve(stored, state=LeaseState.SETTLED))

    current = await store.get(TASK)
    assert current is not None
    assert current.state is LeaseState.ACTIVE


async def test_replace_of_a_lease_superseded_by_a_newer_one_is_refused(
    store: LeaseStore,
) -> None:
    old = await store.put(lease("lease-1"))
    newer = await store.put(lease("lease-2"))

    with pytest.raises(LeaseRevisionError):
        await store.replace(attrs.evolve(old, revision=newer.revision))


async def test_replace_of_an_expired_lease_is_refused(
    store: LeaseStore, clock: ManualClock
) -> None:
    stored = await store.put(lease())
    clock.advance(LIFETIME)

    with pytest.raises(LeaseRevisionError):
        await store.replace(stored)
    with pytest.raises(LeaseRevisionError):
        await store.replace(attrs.evolve(stored, deadline=clock.now() + LIFETIME))


async def test_replace_of_an_absent_or_deleted_lease_is_refused(store: LeaseStore) -> None:
    with pytest.raises(LeaseRevisionError):
        await store.replace(lease())

    stored = await store.put(lease())
    await store.delete(TASK, stored.lease_id)

    with pytest.raises(LeaseRevisionError):
        await store.replace(stored)


async def test_delete_forgets_only_the_named_lease(store: LeaseStore) -> None:
    await store.put(lease("lease-2"))

    await store.delete(TASK, "lease-1")
    kept = await store.get(TASK)
    await store.delete(TASK, "lease-2")

    assert kept is not None
    assert await store.get(TASK) is None
    assert await store.count() == 0


async def test_count_counts_unexpired_leases(store: LeaseStore, clock: ManualClock) -> None:
    await store.put(lease(task_id=TaskId("run-1.s1")))
    clock.advance(timedelta(minutes=1))
    await store.put(
        attrs.evolve(lease(task_id=TaskId("run-1.s2")), deadline=clock.now() + LIFETIME)
    )

    before = await store.count()
    clock.advance(LIFETIME - timedelta(minutes=1))

    assert before == 2
    assert await store.count() == 1


async def test_held_by_lists_the_live_unsettled_leases_of_the_worker(
    store: LeaseStore, clock: ManualClock
) -> None:
    mine = await store.put(lease("a", TaskId("run-1.a")))
    settling = await store.put(lease("b", TaskId("run-1.b")))
    settling = await store.replace(attrs.evolve(settling, state=LeaseState.SETTLING))
    settled = await store.put(lease("f", TaskId("run-1.f")))
    await store.replace(attrs.evolve(settled, state=LeaseState.SETTLED))
    await store.put(attrs.evolve(lease("c", TaskId("run-1.c")), worker_id=WorkerId("w-10")))
    await store.put(attrs.evolve(lease("d", TaskId("run-1.d")), worker_id=None))
    superseded = await store.put(lease("e", TaskId("run-1.e")))
    await store.put(attrs.evolve(superseded, lease_id=LeaseId("e2"), worker_id=WorkerId("w-2")))

    held = await store.held_by(WorkerId("w-1"))
    clock.advance(LIFETIME)

    assert sorted(held, key=lambda h: h.task_id) == [mine, settling]
    assert await store.held_by(WorkerId("w-1")) == []


async def test_held_by_follows_a_task_to_the_worker_of_its_newest_lease(
    store: LeaseStore,
) -> None:
    w1, w2 = WorkerId("w1"), WorkerId("w2")
    await store.put(attrs.evolve(lease("old"), worker_id=w1))

    newer = await store.put(attrs.evolve(lease("new"), worker_id=w2))

    assert await store.held_by(w1) == []
    assert await store.held_by(w2) == [newer]
    await store.delete(TASK, "new")
    assert await store.held_by(w2) == []
