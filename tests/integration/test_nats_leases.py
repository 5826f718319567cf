"""NatsLeaseStore against a real nats-server: compare-and-set, expiry, fencing, sharing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import attrs
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from adapters.memory.clock import EPOCH, ManualClock
from adapters.nats.kv import NatsKeyValue
from adapters.nats.leases import NatsLeaseStore, lease_key
from app.embedded import EmbeddedNats
from domain.errors import BackendError, LeaseRevisionError
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
from tests.integration.kv_helpers import bucket_name, fresh_bucket

pytestmark = pytest.mark.integration

TASK = TaskId("run-1.s1")
LIFETIME = timedelta(minutes=5, seconds=30)


def lease(lease_id: str = "lease-1", task_id: TaskId = TASK) -> Lease:
    return Lease(
        task_id=task_id,
        run_id=RunId("run-1"),
        step_id=StepId("s1"),
        task_type=TaskType("email"),
        lease_id=LeaseId(lease_id),
        handle=DeliveryHandle("$JS.ACK.TASK_QUEUES.workers-email.1.7.7.1767225600000000000.0"),
        attempt=1,
        iteration=0,
        delivery_count=1,
        ack_wait=timedelta(minutes=5),
        deadline=EPOCH + LIFETIME,
        worker_id=WorkerId("w-1"),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def kv(nats_client: NatsClient) -> AsyncIterator[NatsKeyValue]:
    # As ensure_leases_bucket makes it: no direct gets, a TTL for garbage only.
    async with fresh_bucket(nats_client.jetstream(), ttl=timedelta(hours=1), direct=False) as kv:
        yield kv


@pytest.fixture
def store(kv: NatsKeyValue, clock: ManualClock) -> NatsLeaseStore:
    return NatsLeaseStore(kv.js, clock=clock, bucket=kv.name)


@pytest.fixture
async def other_js(nats_server: EmbeddedNats) -> AsyncIterator[JetStreamContext]:
    """A second connection, as another bridge process (or this one restarted) would have."""
    client = await nats.connect(nats_server.url)
    yield client.jetstream()
    await client.drain()


async def test_put_stores_the_lease_at_its_kv_revision(
    store: NatsLeaseStore, kv: NatsKeyValue
) -> None:
    stored = await store.put(attrs.evolve(lease(), revision=99))
    entry = await kv.get(lease_key(TASK))

    assert entry is not None
    assert stored == attrs.evolve(lease(), revision=entry.revision)
    assert await store.get(TASK) == stored


async def test_an_absent_task_has_no_lease(store: NatsLeaseStore) -> None:
    assert await store.get(TASK) is None


async def test_a_lease_reads_as_absent_once_its_deadline_comes(
    store: NatsLeaseStore, clock: ManualClock
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


async def test_replace_with_the_current_revision_stores_a_new_one(
    store: NatsLeaseStore,
) -> None:
    stored = await store.put(lease())

    replaced = await store.replace(
        attrs.evolve(stored, state=LeaseState.SETTLING, terminal_action="complete")
    )

    assert replaced.revision > stored.revision
    assert await store.get(TASK) == replaced


async def test_replace_with_a_stale_revision_is_refused(store: NatsLeaseStore) -> None:
    stored = await store.put(lease())
    await store.replace(stored)

    with pytest.raises(LeaseRevisionError, match=TASK):
        await store.replace(attrs.evolve(stored, state=LeaseState.SETTLED))

    current = await store.get(TASK)
    assert current is not None
    assert current.state is LeaseState.ACTIVE


async def test_replace_of_a_lease_superseded_by_a_newer_one_is_refused(
    store: NatsLeaseStore,
) -> None:
    old = await store.put(lease("lease-1"))
    newer = await store.put(lease("lease-2"))

    with pytest.raises(LeaseRevisionError):
        await store.replace(attrs.evolve(old, revision=newer.revision))


async def test_replace_of_an_expired_lease_is_refused(
    store: NatsLeaseStore, clock: ManualClock
) -> None:
    stored = await store.put(lease())
    clock.advance(LIFETIME)

    with pytest.raises(LeaseRevisionError):
        await store.replace(attrs.evolve(stored, deadline=clock.now() + LIFETIME))


async def test_replace_of_an_absent_or_deleted_lease_is_refused(store: NatsLeaseStore) -> None:
    with pytest.raises(LeaseRevisionError):
        await store.replace(lease())

    stored = await store.put(lease())
    await store.delete(TASK, stored.lease_id)

    with pytest.raises(LeaseRevisionError):
        await store.replace(stored)


async def test_delete_forgets_only_the_named_lease(store: NatsLeaseStore) -> None:
    await store.put(lease("lease-2"))

    await store.delete(TASK, "lease-1")
    kept = await store.get(TASK)
    await store.delete(TASK, "lease-2")

    assert kept is not None
    assert await store.get(TASK) is None
    assert await store.count() == 0


async def test_delete_forgets_an_expired_lease_too(
    store: NatsLeaseStore, kv: NatsKeyValue, clock: ManualClock
) -> None:
    await store.put(lease())
    clock.advance(LIFETIME)

    await store.delete(TASK, "lease-1")

    assert await kv.get(lease_key(TASK)) is None


async def test_count_counts_unexpired_leases(store: NatsLeaseStore, clock: ManualClock) -> None:
    await store.put(lease(task_id=TaskId("run-1.s1")))
    clock.advance(timedelta(minutes=1))
    await store.put(
        attrs.evolve(lease(task_id=TaskId("run-1.s2")), deadline=clock.now() + LIFETIME)
    )

    before = await store.count()
    clock.advance(LIFETIME - timedelta(minutes=1))

    assert before == 2
    assert await store.count() == 1


async def test_a_lease_put_through_one_connection_is_resolved_through_another(
    store: NatsLeaseStore, kv: NatsKeyValue, other_js: JetStreamContext, clock: ManualClock
) -> None:
    other = NatsLeaseStore(other_js, clock=clock, bucket=kv.name)
    stored = await store.put(lease())

    seen = await other.get(TASK)
    assert seen == stored
    settled = await other.replace(attrs.evolve(stored, state=LeaseState.SETTLED))

    assert await store.get(TASK) == settled
    with pytest.raises(LeaseRevisionError):
        await store.replace(attrs.evolve(stored, state=LeaseState.SETTLING))


@pytest.mark.parametrize(
    "task_id", ["run 1.step/ä", "run..step.", ".run.step", "run=20.step", "run%20.step", "r.*>"]
)
async def test_task_ids_with_odd_characters_round_trip(
    store: NatsLeaseStore, kv: NatsKeyValue, task_id: str
) -> None:
    stored = await store.put(lease(task_id=TaskId(task_id)))
    await store.put(lease("plain", task_id=TaskId("run-1.s1")))

    assert await store.get(TaskId(task_id)) == stored
    assert await kv.get(lease_key(TaskId(task_id))) is not None
    assert await store.count() == 2


async def test_a_missing_lease_bucket_is_a_backend_fault(
    nats_client: NatsClient, clock: ManualClock
) -> None:
    store = NatsLeaseStore(nats_client.jetstream(), clock=clock, bucket=bucket_name("missing"))

    with pytest.raises(BackendError, match="missing"):
        await store.get(TASK)


async def test_an_unreadable_lease_is_a_backend_fault(
    store: NatsLeaseStore, kv: NatsKeyValue
) -> None:
    await kv.put(lease_key(TASK), b"not a lease")

    with pytest.raises(BackendError, match="unreadable lease"):
        await store.get(TASK)


async def test_held_by_lists_the_live_leases_of_the_worker_in_any_state(
    store: NatsLeaseStore, clock: ManualClock
) -> None:
    mine = await store.put(lease("a", TaskId("run-1.a")))
    settled = await store.put(lease("b", TaskId("run-1.b")))
    settled = await store.replace(attrs.evolve(settled, state=LeaseState.SETTLED))
    await store.put(attrs.evolve(lease("c", TaskId("run-1.c")), worker_id=WorkerId("w-10")))
    await store.put(attrs.evolve(lease("d", TaskId("run-1.d")), worker_id=None))
    superseded = await store.put(lease("e", TaskId("run-1.e")))
    await store.put(attrs.evolve(superseded, lease_id=LeaseId("e2"), worker_id=WorkerId("w-2")))

    held = await store.held_by(WorkerId("w-1"))
    clock.advance(LIFETIME)

    assert sorted(held, key=lambda h: h.task_id) == [mine, settled]
    assert await store.held_by(WorkerId("w-1")) == []
