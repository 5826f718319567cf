"""A terminal resolve cut short after its event was published (NATS away at the ack or at the
last lease write, the bridge killed) must not lead to a second terminal event: neither from
the worker's retry nor from the redelivery AckWait brings, both past WORKFLOW_HISTORY's 5 s
duplicate window."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Final

import attrs
import pytest

from adapters.memory.events import MemoryEventLog
from adapters.memory.leases import MemoryLeaseStore
from domain.errors import AlreadySettledError, BackendUnavailableError, StaleLeaseError
from domain.models import (
    DeliveryHandle,
    Event,
    Lease,
    LeaseState,
    OutboundEvent,
    PolledTask,
    RawJson,
    RunId,
    TaskId,
    TaskType,
)
from domain.protocol import (
    DISPATCH_FAILURE_DELAY,
    LEASE_GRACE,
    STEP_COMPLETED,
    STEP_CONTINUE,
    STEP_FAILED,
    STEP_STARTED,
)
from domain.services.actions import ResolveRequest
from domain.services.locks import KeyedLocks
from domain.services.resolve import Resolution
from domain.services.simulator import EnqueueCommand
from tests.factories import ACK_WAIT, Harness, PassThroughQueue

WORK: Final = TaskType("work")
RUN: Final = RunId("r1")
PAST_THE_DUPLICATE_WINDOW: Final = timedelta(seconds=10)
TERMINAL_EVENT: Final[dict[str, tuple[str, int | None]]] = {
    "complete": (STEP_COMPLETED, 1),
    "fail": (STEP_FAILED, 1),
    "continue": (STEP_CONTINUE, None),  # step.continue carries no attempt
}
FIELDS: Final[dict[str, dict[str, Any]]] = {
    "complete": {"output": RawJson(b'{"ok":true}')},
    "fail": {"error": "boom", "failure_type": "non_retriable"},
    "continue": {"output": RawJson(b'{"turn":1}')},
}


class KilledError(BaseException):
    """The bridge process dies here: nothing after it runs (not a DomainError, so no
    handler of the use case sees it)."""


@attrs.define
class AwayLeaseStore(MemoryLeaseStore):
    """The memory lease store, except that every call fails while `away` (NATS is away)."""

    away: bool = False
    reads: int = 0
    before_next_replace: Callable[[], Awaitable[object]] | None = None
    """Run once, just before the next replace is applied (a racing request)."""

    async def get(self, task_id: TaskId) -> Lease | None:
        self._check()
        self.reads += 1
        return await super().get(task_id)

    async def put(self, lease: Lease) -> Lease:
        self._check()
        return await super().put(lease)

    async def replace(self, lease: Lease) -> Lease:
        self._check()
        if (racing := self.before_next_replace) is not None:
            self.before_next_replace = None
            await racing()
        return await super().replace(lease)

    def _check(self) -> None:
        if self.away:
            raise BackendUnavailableError("update lease in KV bridge_leases: NATS unavailable")


@attrs.define
class NatsGoesAway(PassThroughQueue):
    """The memory queue, except that NATS goes away (leases included, unless not
    `leases_too`) at the first ack: before it is applied (`ack_applied=False`), or right
    after."""

    leases: AwayLeaseStore
    ack_applied: bool
    leases_too: bool = True
    struck: bool = False

    async def ack(self, handle: DeliveryHandle) -> None:
        if self.struck:
            await self.inner.ack(handle)
            return
        self.struck = True
        self.leases.away = self.leases_too
        if not self.ack_applied:
            raise BackendUnavailableError("ack message: NATS unavailable (reconnecting)")
        await self.inner.ack(handle)


@attrs.define
class FaultAtTerminalEvent:
    """The memory event log, except that `fault` strikes at the first terminal event: right
    after it is stored (`stored=True`), or just before."""

    inner: MemoryEventLog
    stored: bool
    fault: BaseException
    struck: bool = False

    async def append(self, outbound: OutboundEvent) -> bool:
        if self.struck or outbound.event.type == STEP_STARTED:
            return await self.inner.append(outbound)
        self.struck = True
        if self.stored:
            await self.inner.append(outbound)
        raise self.fault

    async def read(self, run_id: RunId) -> list[Event]:
        return await self.inner.read(run_id)

    async def contains(self, run_id: RunId, msg_id: str) -> bool:
        return await self.inner.contains(run_id, msg_id)


@attrs.define
class Bridge:
    """A harness whose lease store and queue can lose NATS, and whose process can die."""

    harness: Harness
    leases: AwayLeaseStore

    @classmethod
    async def with_one_task(cls) -> tuple[Bridge, PolledTask]:
        harness = Harness()
        leases = AwayLeaseStore(harness.clock)
        harness.poll = attrs.evolve(harness.poll, leases=leases)
        harness.resolve = attrs.evolve(harness.resolve, leases=leases)
        await harness.enqueue(EnqueueCommand(task_type=WORK, run_id=RUN))
        (task,) = await harness.poll_now(WORK)
        return cls(harness, leases), task

    def nats_goes_away_at_the_ack(self, *, ack_applied: bool, leases_too: bool = True) -> None:
        queue = NatsGoesAway(
            self.harness.queue, self.leases, ack_applied=ack_applied, leases_too=leases_too
        )
        self.harness.resolve = attrs.evolve(self.harness.resolve, queue=queue)

    def killed_at_the_terminal_event(self, *, stored: bool) -> None:
        self._fault_at_the_terminal_event(KilledError(), stored=stored)

    def unanswered_terminal_event(self, *, stored: bool) -> None:
        """Its publish gets no answer (a timeout): stored or not, the bridge cannot tell."""
        fault = BackendUnavailableError("publish step.completed: NATS unavailable (TimeoutError)")
        self._fault_at_the_terminal_event(fault, stored=stored)

    def _fault_at_the_terminal_event(self, fault: BaseException, *, stored: bool) -> None:
        events = FaultAtTerminalEvent(self.harness.events, stored=stored, fault=fault)
        self.harness.resolve = attrs.evolve(self.harness.resolve, events=events)

    def restarted(self) -> None:
        """NATS is back, or a new bridge process serves: plain adapters, fresh task locks."""
        self.leases.away = False
        self.harness.resolve = attrs.evolve(
            self.harness.resolve,
            queue=self.harness.queue,
            events=self.harness.events,
            locks=KeyedLocks(),
        )

    async def resolve(self, task: PolledTask, action: str) -> Resolution:
        request = ResolveRequest(action=action, lease_id=task.lease_id, **FIELDS[action])
        return await self.harness.resolve(task.task_id, request)

    async def history(self) -> list[tuple[str, int | None]]:
        return [(e.type, e.attempt_number) for e in await self.harness.events.read(RUN)]

    async def stored_lease(self, task: PolledTask) -> Lease | None:
        return await self.leases.get(task.task_id)


CUT_SHORT: Final = [
    "ack_and_lease_write_lost",
    "last_lease_write_lost",
    "killed_after_publish",
    "publish_stored_unanswered",
]


async def cut_short(bridge: Bridge, task: PolledTask, action: str, fault: str) -> None:
    """Resolve `task` with `action` and have `fault` strike once its event is stored."""
    if fault == "killed_after_publish":
        bridge.killed_at_the_terminal_event(stored=True)
    elif fault == "publish_stored_unanswered":
        bridge.unanswered_terminal_event(stored=True)
    else:
        bridge.nats_goes_away_at_the_ack(ack_applied=fault == "last_lease_write_lost")

    with pytest.raises((BackendUnavailableError, KilledError)):
        await bridge.resolve(task, action)
    bridge.restarted()


@pytest.mark.parametrize("fault", CUT_SHORT)
@pytest.mark.parametrize("action", ["complete", "fail", "continue"])
async def test_a_retry_past_the_duplicate_window_does_not_publish_the_event_again(
    action: str, fault: str
) -> None:
    bridge, task = await Bridge.with_one_task()
    await cut_short(bridge, task, action, fault)
    lease = await bridge.stored_lease(task)
    assert lease is not None
    assert (lease.state, lease.recorded) == (LeaseState.SETTLING, False)

    bridge.harness.clock.advance(PAST_THE_DUPLICATE_WINDOW)
    retried = await bridge.resolve(task, action)
    again = await bridge.resolve(task, action)

    assert (retried.replayed, again.replayed) == (False, True)
    assert await bridge.history() == [(STEP_STARTED, 1), TERMINAL_EVENT[action]]
    assert bridge.harness.queue.messages() == []


@pytest.mark.parametrize("action", ["complete", "fail", "continue"])
async def test_a_retry_after_a_refused_ack_only_acks(action: str) -> None:
    """The lease is marked settled while the ack is under way; the ack is refused, so the
    lease goes back to settling with its event recorded, and the retry acks."""
    bridge, task = await Bridge.with_one_task()
    bridge.nats_goes_away_at_the_ack(ack_applied=False, leases_too=False)
    with pytest.raises(BackendUnavailableError):
        await bridge.resolve(task, action)
    bridge.restarted()
    lease = await bridge.stored_lease(task)
    assert lease is not None
    assert (lease.state, lease.recorded) == (LeaseState.SETTLING, True)

    bridge.harness.clock.advance(PAST_THE_DUPLICATE_WINDOW)
    retried = await bridge.resolve(task, action)

    assert retried.replayed is False
    assert await bridge.history() == [(STEP_STARTED, 1), TERMINAL_EVENT[action]]
    assert bridge.harness.queue.messages() == []
    settled = await bridge.stored_lease(task)
    assert settled is not None
    assert settled.state is LeaseState.SETTLED


async def test_a_retry_after_the_claim_alone_publishes_the_event() -> None:
    bridge, task = await Bridge.with_one_task()
    bridge.killed_at_the_terminal_event(stored=False)
    with pytest.raises(KilledError):
        await bridge.resolve(task, "complete")
    bridge.restarted()

    bridge.harness.clock.advance(PAST_THE_DUPLICATE_WINDOW)
    retried = await bridge.resolve(task, "complete")

    assert retried.replayed is False
    assert await bridge.history() == [(STEP_STARTED, 1), (STEP_COMPLETED, 1)]
    assert bridge.harness.queue.messages() == []


@pytest.mark.parametrize(
    "fault", ["ack_and_lease_write_lost", "killed_after_publish", "publish_stored_unanswered"]
)
@pytest.mark.parametrize("action", ["complete", "fail", "continue"])
async def test_a_redelivery_of_a_task_settled_but_not_acked_is_acked_not_handed_out_again(
    action: str, fault: str
) -> None:
    bridge, task = await Bridge.with_one_task()
    await cut_short(bridge, task, action, fault)

    bridge.harness.clock.advance(ACK_WAIT)
    polled = await bridge.harness.poll_now(WORK)
    retried = await bridge.resolve(task, action)

    assert polled == []
    assert bridge.harness.queue.messages() == []
    assert await bridge.history() == [(STEP_STARTED, 1), TERMINAL_EVENT[action]]
    assert retried.replayed is True
    lease = await bridge.stored_lease(task)
    assert lease is not None
    assert lease.deadline == bridge.harness.clock.now() + ACK_WAIT + LEASE_GRACE


async def test_a_redelivery_of_an_abandoned_claim_is_handed_out_again() -> None:
    bridge, task = await Bridge.with_one_task()
    bridge.killed_at_the_terminal_event(stored=False)
    with pytest.raises(KilledError):
        await bridge.resolve(task, "complete")
    bridge.restarted()

    bridge.harness.clock.advance(ACK_WAIT)
    (again,) = await bridge.harness.poll_now(WORK)
    await bridge.resolve(again, "complete")

    assert again.attempt == 2
    assert await bridge.history() == [(STEP_STARTED, 1), (STEP_STARTED, 2), (STEP_COMPLETED, 2)]


async def test_a_redelivery_whose_lease_is_of_another_message_of_the_task_is_handed_out() -> None:
    bridge, task = await Bridge.with_one_task()
    await cut_short(bridge, task, "fail", "ack_and_lease_write_lost")
    lease = await bridge.stored_lease(task)
    assert lease is not None
    await bridge.leases.put(attrs.evolve(lease, sequence=lease.sequence + 1))

    bridge.harness.clock.advance(ACK_WAIT)
    (again,) = await bridge.harness.poll_now(WORK)

    assert again.attempt == 2


async def test_only_a_redelivery_reads_the_stored_lease_before_its_hand_out() -> None:
    bridge, _ = await Bridge.with_one_task()
    await bridge.harness.enqueue(EnqueueCommand(task_type=WORK, run_id=RunId("r2")))

    await bridge.harness.poll_now(WORK)
    reads_for_a_first_delivery = bridge.leases.reads
    bridge.harness.clock.advance(ACK_WAIT)
    await bridge.harness.poll_now(WORK)

    assert (reads_for_a_first_delivery, bridge.leases.reads) == (0, 1)


async def test_after_a_publish_without_answer_only_the_same_action_may_retry() -> None:
    bridge, task = await Bridge.with_one_task()
    bridge.unanswered_terminal_event(stored=False)
    with pytest.raises(BackendUnavailableError):
        await bridge.resolve(task, "complete")
    bridge.restarted()

    with pytest.raises(AlreadySettledError):
        await bridge.resolve(task, "fail")
    retried = await bridge.resolve(task, "complete")

    assert retried.replayed is False
    assert await bridge.history() == [(STEP_STARTED, 1), (STEP_COMPLETED, 1)]


@pytest.mark.parametrize("open_lease", ["active", "abandoned_claim"])
async def test_a_resolve_that_claims_the_lease_while_its_redelivery_is_looked_at_wins(
    open_lease: str,
) -> None:
    bridge, task = await Bridge.with_one_task()
    if open_lease == "abandoned_claim":
        bridge.unanswered_terminal_event(stored=False)
        with pytest.raises(BackendUnavailableError):
            await bridge.resolve(task, "complete")
        bridge.restarted()
    bridge.harness.clock.advance(ACK_WAIT)
    bridge.leases.before_next_replace = lambda: bridge.resolve(task, "complete")

    racing = await bridge.harness.poll_now(WORK)
    bridge.harness.clock.advance(DISPATCH_FAILURE_DELAY)
    after_the_delay = await bridge.harness.poll_now(WORK)

    assert (racing, after_the_delay) == ([], [])
    assert await bridge.history() == [(STEP_STARTED, 1), (STEP_COMPLETED, 1)]
    assert bridge.harness.queue.messages() == []


async def test_a_resolve_of_a_lease_whose_redelivery_was_handed_out_is_refused() -> None:
    bridge, task = await Bridge.with_one_task()
    bridge.harness.clock.advance(ACK_WAIT)
    (again,) = await bridge.harness.poll_now(WORK)

    with pytest.raises(StaleLeaseError):
        await bridge.resolve(task, "complete")
    await bridge.resolve(again, "complete")

    assert await bridge.history() == [(STEP_STARTED, 1), (STEP_STARTED, 2), (STEP_COMPLETED, 2)]
