"""NatsLeaseStore against a real nats-server: KV revisions and keys, sharing, faults.

The scenarios both lease stores share (compare-and-set, expiry, fencing, held_by) run against
it in test_lease_store_contract.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import attrs
import nats
import pytest
from nats.aio.client import Client as NatsClient

from adapters.memory.clock import ManualClock
from adapters.nats import leases
from adapters.nats.jetstream import JetStream
from adapters.nats.kv import NatsKeyValue
from adapters.nats.leases import NatsLeaseStore, held_key, lease_key
from app.embedded import EmbeddedNats
from domain.errors import BackendError, LeaseRevisionError
from domain.models import Lease, LeaseState, TaskId, WorkerId
from tests.integration.kv_helpers import bucket_name, lease_bucket
from tests.lease_builders import LIFETIME, TASK, lease

pytestmark = pytest.mark.integration


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def kv(nats_client: NatsClient) -> AsyncIterator[NatsKeyValue]:
    async with lease_bucket(JetStream(nats_client)) as kv:
        yield kv


@pytest.fixture
def store(kv: NatsKeyValue, clock: ManualClock) -> NatsLeaseStore:
    return NatsLeaseStore(kv.js, clock=clock, bucket=kv.name)


@pytest.fixture
async def other_js(nats_server: EmbeddedNats) -> AsyncIterator[JetStream]:
    """A second connection, as another bridge process (or this one restarted) would have."""
    client = await nats.connect(nats_server.url)
    yield JetStream(client)
    await client.drain()


async def test_put_stores_the_lease_at_its_kv_revision(
    store: NatsLeaseStore, kv: NatsKeyValue
) -> None:
    stored = await store.put(attrs.evolve(lease(), revision=99))
    entry = await kv.get(lease_key(TASK))

    assert entry is not None
    assert "revision" not in json.loads(entry.value)
    assert stored == attrs.evolve(lease(), revision=entry.revision)
    assert await store.get(TASK) == stored


async def test_delete_forgets_an_expired_lease_too(
    store: NatsLeaseStore, kv: NatsKeyValue, clock: ManualClock
) -> None:
    await store.put(lease())
    clock.advance(LIFETIME)

    await store.delete(TASK, "lease-1")

    assert await kv.get(lease_key(TASK)) is None


async def test_a_lease_put_through_one_connection_is_resolved_through_another(
    store: NatsLeaseStore, kv: NatsKeyValue, other_js: JetStream, clock: ManualClock
) -> None:
    other = NatsLeaseStore(other_js, clock=clock, bucket=kv.name)
    stored = await store.put(lease())

    seen = await other.get(TASK)
    assert seen == stored
    settled = await other.replace(attrs.evolve(stored, state=LeaseState.SETTLED))

    assert await store.get(TASK) == settled
    with pytest.raises(LeaseRevisionError):
        await store.replace(attrs.evolve(stored, state=LeaseState.SETTLING))


async def test_recent_is_the_lease_last_seen_here_until_a_read_finds_a_newer_one(
    store: NatsLeaseStore, kv: NatsKeyValue, other_js: JetStream, clock: ManualClock
) -> None:
    other = NatsLeaseStore(other_js, clock=clock, bucket=kv.name)
    stored = await store.put(lease())
    extended = await other.replace(attrs.evolve(stored, deadline=stored.deadline + LIFETIME))

    last_seen = store.recent(TASK)
    with pytest.raises(LeaseRevisionError):
        await store.replace(attrs.evolve(stored, state=LeaseState.SETTLING))
    read = await store.get(TASK)

    assert last_seen == stored
    assert read == extended
    assert store.recent(TASK) == extended
    assert other.recent(TaskId("never-seen")) is None
    clock.advance(LIFETIME * 2)
    assert store.recent(TASK) is None


async def test_a_settled_lease_is_not_kept_in_memory_but_read_again(
    store: NatsLeaseStore,
) -> None:
    stored = await store.put(lease())
    settled = await store.replace(attrs.evolve(stored, state=LeaseState.SETTLED))

    assert store.recent(TASK) is None
    assert await store.get(TASK) == settled
    assert store.recent(TASK) is None


async def test_only_the_newest_open_leases_are_kept_in_memory(
    store: NatsLeaseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = 3
    monkeypatch.setattr(leases, "KNOWN_REVISIONS_MAX", kept)
    first = await store.put(lease())
    for n in range(kept):
        await store.put(attrs.evolve(lease(), task_id=TaskId(f"other-{n}")))

    assert store.recent(TASK) is None
    assert await store.get(TASK) == first
    assert [store.recent(TaskId(f"other-{n}")) is not None for n in range(kept)] == [
        False,
        True,
        True,
    ]


def index_key(held: Lease) -> str:
    assert held.worker_id is not None
    return held_key(held.worker_id, held.task_id, held.lease_id)


async def test_a_lease_of_a_worker_is_indexed_under_it_until_it_settles(
    store: NatsLeaseStore, kv: NatsKeyValue
) -> None:
    stored = await store.put(lease())
    indexed = await kv.get(index_key(stored))
    await store.replace(attrs.evolve(stored, state=LeaseState.SETTLED))

    assert indexed is not None
    assert await kv.get(index_key(stored)) is None
    assert await store.count() == 1


async def test_a_deleted_lease_leaves_no_index_key(store: NatsLeaseStore, kv: NatsKeyValue) -> None:
    stored = await store.put(lease())

    await store.delete(TASK, "lease-1")

    assert await kv.get(index_key(stored)) is None


async def test_an_extension_writes_the_index_key_again_so_it_outlives_the_bucket_ttl(
    store: NatsLeaseStore, kv: NatsKeyValue
) -> None:
    stored = await store.put(lease())
    await kv.delete(index_key(stored))  # as the bucket's TTL would, under a long task

    extended = await store.replace(attrs.evolve(stored, deadline=stored.deadline + LIFETIME))

    assert await kv.get(index_key(stored)) is not None
    assert await store.held_by(WorkerId("w-1")) == [extended]


async def test_a_lease_put_back_from_settled_is_held_again(store: NatsLeaseStore) -> None:
    stored = await store.put(lease())
    settled = await store.replace(attrs.evolve(stored, state=LeaseState.SETTLED))

    back = await store.replace(attrs.evolve(settled, state=LeaseState.SETTLING, recorded=True))

    assert await store.held_by(WorkerId("w-1")) == [back]


async def test_a_refused_settle_of_an_old_lease_leaves_the_newer_lease_of_the_worker_held(
    store: NatsLeaseStore, other_js: JetStream, kv: NatsKeyValue, clock: ManualClock
) -> None:
    """Another process fenced the old lease and handed the task to the same worker again."""
    old = await store.put(lease("old"))
    other = NatsLeaseStore(other_js, clock=clock, bucket=kv.name)
    newer = await other.put(lease("new"))

    with pytest.raises(LeaseRevisionError):
        await store.replace(attrs.evolve(old, state=LeaseState.SETTLED))

    assert await store.held_by(WorkerId("w-1")) == [newer]


async def test_index_keys_of_leases_gone_to_another_worker_or_expired_are_cleaned_up(
    store: NatsLeaseStore, kv: NatsKeyValue, clock: ManualClock
) -> None:
    moved = await store.put(lease("a", TaskId("run-1.moved")))
    now_of_w2 = await store.put(
        attrs.evolve(lease("b", TaskId("run-1.moved")), worker_id=WorkerId("w-2"))
    )
    expiring = await store.put(
        attrs.evolve(lease("c", TaskId("run-1.expiring")), deadline=clock.now() + LIFETIME / 2)
    )
    clock.advance(LIFETIME / 2)

    assert await store.held_by(WorkerId("w-1")) == []
    assert await kv.get(index_key(moved)) is None
    assert await kv.get(index_key(expiring)) is None
    assert await kv.get(index_key(now_of_w2)) is not None


async def test_worker_ids_that_share_a_prefix_have_indexes_of_their_own(
    store: NatsLeaseStore,
) -> None:
    short, dotted = WorkerId("a"), WorkerId("a.b")
    of_short = await store.put(attrs.evolve(lease("x", TaskId("run-1.x")), worker_id=short))
    of_dotted = await store.put(attrs.evolve(lease("y", TaskId("run-1.y")), worker_id=dotted))

    assert await store.held_by(short) == [of_short]
    assert await store.held_by(dotted) == [of_dotted]


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
    store = NatsLeaseStore(JetStream(nats_client), clock=clock, bucket=bucket_name("missing"))

    with pytest.raises(BackendError, match="missing"):
        await store.get(TASK)


async def test_an_unreadable_lease_is_a_backend_fault(
    store: NatsLeaseStore, kv: NatsKeyValue
) -> None:
    await kv.put(lease_key(TASK), b"not a lease")

    with pytest.raises(BackendError, match="unreadable lease"):
        await store.get(TASK)
