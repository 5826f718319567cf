"""Resolve: settle or extend a leased task, fenced by its lease and serialised per task."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import attrs

from domain.errors import (
    AlreadySettledError,
    BucketUnavailableError,
    DomainError,
    SignalTimeoutError,
    StaleLeaseError,
    TaskNotFoundError,
)
from domain.models import (
    Event,
    Lease,
    LeaseState,
    OutboundEvent,
    RawJson,
    StepFailed,
    TaskId,
    WorkerId,
)
from domain.ports import (
    Clock,
    EventLog,
    KeyValue,
    KeyValueBuckets,
    LeaseStore,
    StreamPublisher,
    TaskQueue,
)
from domain.protocol import (
    LEASE_GRACE,
    SIGNAL_WAIT_TICK,
    STEP_COMPLETED,
    STEP_CONTINUE,
    STEP_FAILED,
    continue_msg_id,
    event_msg_id,
    pause_marker,
)
from domain.services.actions import (
    Checkpoint,
    Complete,
    Continue,
    Fail,
    Heartbeat,
    Pause,
    ResolveRequest,
    SendSignal,
    Stream,
    TerminalAction,
    WaitSignal,
    parse_action,
)
from domain.services.locks import KeyedLocks
from domain.services.poll import trace_headers

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class Resolution:
    """The outcome of a resolve: `replayed` when it repeated an already applied terminal action;
    `signal` holds the value a wait_signal received."""

    action: str
    replayed: bool = False
    signal: RawJson | None = None


@attrs.frozen(kw_only=True)
class ResolveService:
    """Apply one resolve action to the task's current lease.

    Terminal actions (complete, fail, pause, continue) claim the lease before their side
    effects, so exactly one of them wins; repeating the winning one answers a replay.
    Every event is published before its delivery is acked (at-least-once to the engine),
    with msg-ids that make a retried publish a duplicate the event log drops.
    """

    queue: TaskQueue
    events: EventLog
    leases: LeaseStore
    buckets: KeyValueBuckets
    streams: StreamPublisher
    clock: Clock
    locks: KeyedLocks = attrs.field(factory=KeyedLocks)
    """Per task id; shared with the lease release, so neither interleaves with the other."""

    async def __call__(self, task_id: TaskId, request: ResolveRequest) -> Resolution:
        async with self.locks.hold(task_id):
            lease = await self._current(task_id, request)
            action = parse_action(request)
            if isinstance(action, TerminalAction):
                return await self._settle(lease, action, request.worker_id)
            if isinstance(action, WaitSignal):
                signals = required(await self.buckets.signals(), "signal")
                await self._extend(lease)
            else:
                return await self._apply(lease, action)
        return await self._wait_signal(lease, action, signals)

    async def _current(self, task_id: TaskId, request: ResolveRequest) -> Lease:
        lease = await self.leases.get(task_id)
        if lease is None:
            raise TaskNotFoundError
        if request.lease_id is not None and request.lease_id != lease.lease_id:
            raise StaleLeaseError(request.lease_id)
        return lease

    async def _settle(
        self, lease: Lease, action: TerminalAction, worker_id: WorkerId | None
    ) -> Resolution:
        if lease.state is not LeaseState.ACTIVE and lease.terminal_action != action.action:
            raise AlreadySettledError(lease.terminal_action or "")
        if lease.state is LeaseState.SETTLED:
            return Resolution(action=action.action, replayed=True)
        claimed = await self.leases.replace(
            attrs.evolve(lease, state=LeaseState.SETTLING, terminal_action=action.action)
        )
        if not claimed.recorded:
            await self._record(claimed, action, worker_id or claimed.worker_id)
        try:
            await self._settle_delivery(claimed, action)
        except DomainError:
            # The event is out: a retry must only settle the delivery, never publish again.
            await self._best_effort(attrs.evolve(claimed, recorded=True))
            raise
        await self.leases.replace(
            attrs.evolve(claimed, state=LeaseState.SETTLED, deadline=self._deadline(claimed))
        )
        return Resolution(action=action.action)

    async def _record(
        self, claimed: Lease, action: TerminalAction, worker_id: WorkerId | None
    ) -> None:
        """Publish the terminal event (a pause: save its checkpoint). If that fails nothing
        happened, so the claim is given up and the task takes any action again."""
        try:
            if isinstance(action, Pause):
                await self._save_pause_checkpoint(claimed, action)
            else:
                await self.events.append(self._terminal_event(claimed, action, worker_id))
        except DomainError:
            await self._best_effort(
                attrs.evolve(claimed, state=LeaseState.ACTIVE, terminal_action=None)
            )
            raise

    async def _settle_delivery(self, lease: Lease, action: TerminalAction) -> None:
        if isinstance(action, Pause):
            await self.queue.nak(lease.handle, action.duration)
        else:
            await self.queue.ack(lease.handle)

    async def _best_effort(self, lease: Lease) -> None:
        """Store the lease if the store answers; the caller is already failing."""
        try:
            await self.leases.replace(lease)
        except DomainError as exc:
            log.warning("lease of %s not updated after a failure: %s", lease.task_id, exc)

    def _terminal_event(
        self, lease: Lease, action: Complete | Fail | Continue, worker_id: WorkerId | None
    ) -> OutboundEvent:
        payload: RawJson | StepFailed | None
        if isinstance(action, Continue):
            event_type, payload, attempt = STEP_CONTINUE, action.output, None
            msg_id = continue_msg_id(lease.run_id, lease.step_id, lease.iteration, lease.lease_id)
        else:
            event_type = STEP_COMPLETED if isinstance(action, Complete) else STEP_FAILED
            payload = action.output if isinstance(action, Complete) else action.failure
            attempt = lease.attempt
            msg_id = event_msg_id(lease.run_id, lease.step_id, event_type, attempt)
        event = Event(
            type=event_type,
            run_id=lease.run_id,
            step_id=lease.step_id,
            timestamp=self.clock.now(),
            payload=payload,
            worker_id=worker_id,
            attempt_number=attempt,
        )
        return OutboundEvent(event=event, msg_id=msg_id, headers=trace_headers(lease))

    async def _save_pause_checkpoint(self, lease: Lease, action: Pause) -> None:
        """Decision 6: the given checkpoint, else the native marker for a name, else nothing."""
        value = action.checkpoint
        if value is None and action.name:
            value = pause_marker(action.name)
        if value is not None:
            bucket = required(await self.buckets.checkpoints(), "checkpoint")
            await bucket.put(lease.task_id, value)

    async def _apply(
        self, lease: Lease, action: Checkpoint | Heartbeat | Stream | SendSignal
    ) -> Resolution:
        if lease.state is not LeaseState.ACTIVE:
            raise AlreadySettledError(lease.terminal_action or "")
        if isinstance(action, Checkpoint):
            bucket = required(await self.buckets.checkpoints(), "checkpoint")
            await bucket.put(lease.task_id, action.data)
        elif isinstance(action, Stream):
            await self.streams.publish(lease.run_id, lease.step_id, action.data)
        elif isinstance(action, SendSignal):
            bucket = required(await self.buckets.signals(), "signal")
            await bucket.put(f"{action.run_id}.{action.name}", action.data)
        await self._extend(lease)
        return Resolution(action=action.action)

    async def _extend(self, lease: Lease) -> Lease:
        """Reset the delivery's AckWait and move the lease's deadline with it (Decision 8)."""
        if lease.state is not LeaseState.ACTIVE:
            raise AlreadySettledError(lease.terminal_action or "")
        await self.queue.in_progress(lease.handle)
        return await self.leases.replace(attrs.evolve(lease, deadline=self._deadline(lease)))

    async def _wait_signal(self, lease: Lease, action: WaitSignal, signals: KeyValue) -> Resolution:
        """Wait outside the task's lock, extending the lease every 15 s while waiting."""
        key = f"{lease.run_id}.{action.name}"
        deadline = self.clock.now() + action.timeout
        while (left := deadline - self.clock.now()) > timedelta(0):
            entry = await signals.wait_for_value(key, min(left, SIGNAL_WAIT_TICK))
            if entry is not None:
                return Resolution(action=action.action, signal=RawJson(entry.value))
            if deadline > self.clock.now():
                lease = await self._extend_current(lease)
        raise SignalTimeoutError(action.name)

    async def _extend_current(self, lease: Lease) -> Lease:
        """Extend the lease if it is still the task's current one (it may have been settled)."""
        async with self.locks.hold(lease.task_id):
            fenced = ResolveRequest(lease_id=lease.lease_id)
            return await self._extend(await self._current(lease.task_id, fenced))

    def _deadline(self, lease: Lease) -> datetime:
        return self.clock.now() + lease.ack_wait + LEASE_GRACE


def required(bucket: KeyValue | None, what: str) -> KeyValue:
    if bucket is None:
        raise BucketUnavailableError(what)
    return bucket
