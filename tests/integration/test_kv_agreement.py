"""The memory KV and lease store agree with their NATS twins, step by step.

One Hypothesis state machine drives both adapters in lockstep and compares each outcome as
("ok", value) or ("raised", exception type name). Revisions differ by design (the memory
lease store counts store-wide, NATS per bucket and deletes included), so they are compared
only as "increasing" or "the one last written". Every example gets a fresh bucket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from typing import Any, Generic, TypeVar

import attrs
import nats
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test
from nats.js.api import KeyValueConfig

from adapters.memory.clock import ManualClock, SystemClock
from adapters.memory.kv import MemoryKeyValue
from adapters.memory.leases import MemoryLeaseStore
from adapters.nats.jetstream import JetStream
from adapters.nats.kv import NatsKeyValue, open_bucket
from adapters.nats.leases import NatsLeaseStore
from app.embedded import EmbeddedNats
from domain.models import (
    DeliveryHandle,
    KvEntry,
    Lease,
    LeaseId,
    LeaseState,
    RunId,
    StepId,
    TaskId,
    TaskType,
)
from domain.ports import KeyValue, LeaseStore
from tests.integration.kv_helpers import bucket_name

pytestmark = pytest.mark.integration

T = TypeVar("T")
S = TypeVar("S")
Outcome = tuple[str, object]

MACHINE_SETTINGS = settings(stateful_step_count=20, deadline=None)

keys = st.sampled_from(["a", "b", "run-1.step-1", "x/y=z"])
values = st.binary(max_size=16)
waits = st.sampled_from([timedelta(0), timedelta(milliseconds=1)])

task_ids = st.sampled_from([TaskId("run-1.s1"), TaskId("run-1.s2"), TaskId("run 2..s/ä")])
lease_ids = st.sampled_from([LeaseId("l1"), LeaseId("l2")])
lifetimes = st.sampled_from([timedelta(seconds=s) for s in (1, 5, 30)])


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    """Hypothesis has no async rules: they run their calls through this one loop."""
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture(scope="module")
def jetstream(runner: asyncio.Runner, nats_server: EmbeddedNats) -> Iterator[JetStream]:
    """A connection opened in the runner's loop, the loop every rule runs in."""
    client = runner.run(nats.connect(nats_server.url))
    yield JetStream(client)
    runner.run(client.drain())


async def create_bucket(js: JetStream, name: str, *, direct: bool) -> NatsKeyValue:
    await js.create_key_value(KeyValueConfig(bucket=name, ttl=3600, direct=direct))
    bound = await open_bucket(js, name)
    assert bound is not None
    return bound


class Lockstep(RuleBasedStateMachine, Generic[S]):
    """Runs each call on the memory side, then the NATS side, and compares the outcomes."""

    def __init__(self, runner: asyncio.Runner, js: JetStream, sides: tuple[S, S]) -> None:
        super().__init__()
        self.runner = runner
        self.js = js
        self.sides = sides

    def both(
        self, call: Callable[[S], Coroutine[Any, Any, T]], normalise: Callable[[S, T], object]
    ) -> None:
        memory, on_nats = (self._outcome(side, call, normalise) for side in self.sides)
        assert memory == on_nats

    def _outcome(
        self,
        side: S,
        call: Callable[[S], Coroutine[Any, Any, T]],
        normalise: Callable[[S, T], object],
    ) -> Outcome:
        try:
            result = self.runner.run(call(side))
        except Exception as exc:  # the exception's type is the outcome
            return ("raised", type(exc).__name__)
        return ("ok", normalise(side, result))


# --- KeyValue ------------------------------------------------------------------------------


@attrs.define
class KvSide:
    """One adapter and what the machine saw it return."""

    kv: KeyValue
    last_revision: int = 0
    put_revisions: dict[str, int] = attrs.field(factory=dict)

    def put_returned(self, key: str, revision: int) -> bool:
        increasing = revision > self.last_revision
        self.last_revision = revision
        self.put_revisions[key] = revision
        return increasing

    def seen(self, entry: KvEntry | None) -> object:
        if entry is None:
            return None
        return (entry.key, entry.value, entry.revision == self.put_revisions.get(entry.key))


class KvAgreement(Lockstep[KvSide]):
    def __init__(self, runner: asyncio.Runner, js: JetStream, *, direct: bool) -> None:
        self.name = bucket_name("agree-kv")
        on_nats = runner.run(create_bucket(js, self.name, direct=direct))
        memory = MemoryKeyValue(SystemClock(), bucket=self.name)
        super().__init__(runner, js, (KvSide(memory), KvSide(on_nats)))

    @rule(key=keys, value=values)
    def put(self, key: str, value: bytes) -> None:
        self.both(lambda s: s.kv.put(key, value), lambda s, revision: s.put_returned(key, revision))

    @rule(key=keys)
    def get(self, key: str) -> None:
        self.both(lambda s: s.kv.get(key), KvSide.seen)

    @rule(wanted=st.lists(keys, max_size=5))
    def get_many(self, wanted: list[str]) -> None:
        self.both(
            lambda s: s.kv.get_many(wanted),
            lambda s, found: sorted((key, s.seen(entry)) for key, entry in found.items()),
        )

    @rule(key=keys)
    def delete(self, key: str) -> None:
        self.both(lambda s: s.kv.delete(key), lambda _, result: result)

    @rule()
    def list_keys(self) -> None:
        self.both(lambda s: s.kv.keys(), lambda _, listed: sorted(listed))

    @rule(key=keys, timeout=waits)
    def wait_for_value(self, key: str, timeout: timedelta) -> None:
        self.both(lambda s: s.kv.wait_for_value(key, timeout), KvSide.seen)

    def teardown(self) -> None:
        self.runner.run(self.js.delete_key_value(self.name))


def run_lockstep(factory: Callable[[], RuleBasedStateMachine]) -> None:
    # Hypothesis annotates a machine class, but calls whatever factory it is given.
    run_state_machine_as_test(factory, settings=MACHINE_SETTINGS)  # type: ignore[arg-type]


@pytest.mark.parametrize("direct", [True, False], ids=["direct gets", "no direct gets"])
def test_memory_kv_agrees_with_nats(
    runner: asyncio.Runner, jetstream: JetStream, direct: bool
) -> None:
    run_lockstep(lambda: KvAgreement(runner, jetstream, direct=direct))


# --- LeaseStore ----------------------------------------------------------------------------


def new_lease(task_id: TaskId, lease_id: LeaseId, clock: ManualClock, life: timedelta) -> Lease:
    return Lease(
        task_id=task_id,
        run_id=RunId(task_id.split(".", 1)[0]),
        step_id=StepId(task_id.split(".", 1)[-1]),
        task_type=TaskType("email"),
        lease_id=lease_id,
        handle=DeliveryHandle(f"$JS.ACK.TASK_QUEUES.workers-email.1.{lease_id}"),
        attempt=1,
        iteration=0,
        delivery_count=1,
        ack_wait=timedelta(minutes=5),
        deadline=clock.now() + life,
    )


@attrs.define
class LeaseSide:
    """One store and every lease it returned, per task, oldest first."""

    store: LeaseStore
    written: dict[TaskId, list[Lease]] = attrs.field(factory=dict)

    def wrote(self, lease: Lease) -> Lease:
        self.written.setdefault(lease.task_id, []).append(lease)
        return attrs.evolve(lease, revision=0)

    def seen(self, lease: Lease | None) -> object:
        if lease is None:
            return None
        latest = self.written[lease.task_id][-1]
        return (attrs.evolve(lease, revision=0), lease.revision == latest.revision)

    def earlier(self, task_id: TaskId, pick: int) -> Lease | None:
        """The same earlier write on either side: both sides wrote in lockstep."""
        leases = self.written.get(task_id, [])
        return leases[pick % len(leases)] if leases else None


class LeaseAgreement(Lockstep[LeaseSide]):
    def __init__(self, runner: asyncio.Runner, js: JetStream) -> None:
        self.name = bucket_name("agree-leases")
        self.clock = ManualClock()
        runner.run(create_bucket(js, self.name, direct=False))
        on_nats = NatsLeaseStore(js, clock=self.clock, bucket=self.name)
        memory = MemoryLeaseStore(self.clock)
        super().__init__(runner, js, (LeaseSide(memory), LeaseSide(on_nats)))

    @rule(task_id=task_ids, lease_id=lease_ids, life=lifetimes)
    def put(self, task_id: TaskId, lease_id: LeaseId, life: timedelta) -> None:
        lease = new_lease(task_id, lease_id, self.clock, life)
        self.both(lambda s: s.store.put(lease), LeaseSide.wrote)

    @rule(task_id=task_ids)
    def get(self, task_id: TaskId) -> None:
        self.both(lambda s: s.store.get(task_id), LeaseSide.seen)

    @rule(
        task_id=task_ids,
        pick=st.integers(min_value=0, max_value=4),
        state=st.sampled_from(LeaseState),
        life=lifetimes,
        foreign_id=st.booleans(),
    )
    def replace(
        self, task_id: TaskId, pick: int, state: LeaseState, life: timedelta, foreign_id: bool
    ) -> None:
        """Replace a lease written earlier (maybe stale), or one never stored."""

        def replacement(side: LeaseSide) -> Lease:
            base = side.earlier(task_id, pick) or new_lease(
                task_id, LeaseId("l1"), self.clock, life
            )
            lease_id = LeaseId("foreign") if foreign_id else base.lease_id
            return attrs.evolve(
                base, state=state, deadline=self.clock.now() + life, lease_id=lease_id
            )

        self.both(lambda s: s.store.replace(replacement(s)), LeaseSide.wrote)

    @rule(task_id=task_ids, lease_id=lease_ids)
    def delete(self, task_id: TaskId, lease_id: LeaseId) -> None:
        self.both(lambda s: s.store.delete(task_id, lease_id), lambda _, result: result)

    @rule()
    def count(self) -> None:
        self.both(lambda s: s.store.count(), lambda _, counted: counted)

    @rule(seconds=st.sampled_from([1, 3, 10]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    def teardown(self) -> None:
        self.runner.run(self.js.delete_key_value(self.name))


def test_memory_lease_store_agrees_with_nats(runner: asyncio.Runner, jetstream: JetStream) -> None:
    run_lockstep(lambda: LeaseAgreement(runner, jetstream))
