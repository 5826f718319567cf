"""Resolve: settle or extend a leased task, fenced by its lease and serialised per task."""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta

import attrs

from domain.errors import (
    AlreadySettledError,
    BackendUnavailableError,
    BucketUnavailableError,
    DomainError,
    LeaseRevisionError,
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
    TraceContext,
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
    Telemetry,
    Tracer,
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
from domain.services import together
from domain.services.actions import (
    TERMINAL_ACTIONS,
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
from domain.services.drain import Drain
from domain.services.locks import KeyedLocks
from domain.services.settling import event_recorded, terminal_msg_id
from domain.telemetry import NO_TELEMETRY, Outcome, ResolveNotes, report_resolve
from domain.tracing import NoTracer, lease_trace, trace_headers

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
    with msg-ids that make a retried publish a duplicate the event log drops; a retry that
    finds the claim of an earlier attempt asks the run's history first, as the log forgets
    msg-ids after its duplicate window.
    """

    queue: TaskQueue
    events: EventLog
    leases: LeaseStore
    buckets: KeyValueBuckets
    streams: StreamPublisher
    clock: Clock
    tracer: Tracer = attrs.field(factory=NoTracer)
    """A `bridge.resolve` span per resolve of a task in flight."""
    locks: KeyedLocks = attrs.field(factory=KeyedLocks)
    """Per task id; shared with the lease release, so neither interleaves with the other."""
    telemetry: Telemetry = NO_TELEMETRY
    drain: Drain = attrs.field(factory=Drain)
    """The process's drain, to which a waiting wait_signal gives way: its route answers 503,
    and the worker waits again on another replica. The container passes the process's one;
    the default, which never begins, serves use cases built without a drain."""

    async def __call__(
        self, task_id: TaskId, request: ResolveRequest, trace: TraceContext | None = None
    ) -> Resolution:
        """Reported once answered, failed or not: a log line, and the outcome counted."""
        notes = ResolveNotes(task_id, request, started=self.clock.now())
        try:
            resolution = await self._resolve(task_id, request, trace, notes)
        except BaseException as exc:
            report_resolve(self.telemetry, notes.failed(exc, self.clock.now()))
            raise
        outcome = Outcome.REPLAYED if resolution.replayed else Outcome.APPLIED
        report_resolve(self.telemetry, notes.report(outcome, self.clock.now()))
        return resolution

    async def _resolve(
        self,
        task_id: TaskId,
        request: ResolveRequest,
        trace: TraceContext | None,
        notes: ResolveNotes,
    ) -> Resolution:
        """`trace` is the request's own context; without one, the `bridge.resolve` span
        continues the trace the task was handed out in."""
        with contextlib.ExitStack() as spans:
            async with self.locks.hold(task_id):
                terminal = request.action in TERMINAL_ACTIONS
                lease = notes.lease = await self._current(task_id, request, recent=terminal)
                span_context = spans.enter_context(
                    self.tracer.resolve(
                        trace or lease_trace(lease), task_id=task_id, action=request.action
                    )
                )
                action = parse_action(request)
                if isinstance(action, TerminalAction):
                    claimed = await self._claim_current(lease, action, request, notes)
                    if claimed is None:
                        return Resolution(action=action.action, replayed=True)
                    return await self._settle(claimed, action, request.worker_id, span_context)
                if isinstance(action, WaitSignal):
                    signals = required(await self.buckets.signals(), "signal")
                    await self._extend(lease)
                else:
                    return await self._apply(lease, action, span_context)
            return await self._wait_signal(lease, action, signals)

    async def _current(
        self, task_id: TaskId, request: ResolveRequest, *, recent: bool = False
    ) -> Lease:
        """The task's lease, as the store holds it; with `recent`, as this process last knew
        it if that is an active lease, the one the request names: only a claim's
        compare-and-set checks it, which fails if it is stale. (A settling or settled one
        would be answered without a write, so it is read again.)"""
        lease = self.leases.recent(task_id) if recent else None
        if (
            lease is None
            or lease.state is not LeaseState.ACTIVE
            or request.lease_id not in (None, lease.lease_id)
        ):
            lease = await self.leases.get(task_id)
        if lease is None:
            raise TaskNotFoundError
        if request.lease_id is not None and request.lease_id != lease.lease_id:
            raise StaleLeaseError(request.lease_id)
        return lease

    async def _claim_current(
        self, lease: Lease, action: TerminalAction, request: ResolveRequest, notes: ResolveNotes
    ) -> Lease | None:
        """Claim the lease; if it changed since it was read (or last known here), decide
        again on the stored one. None when the action already settled it (a replay)."""
        try:
            return await self._claim(lease, action)
        except LeaseRevisionError:
            lease = notes.lease = await self._current(lease.task_id, request)
            return await self._claim(lease, action)

    async def _claim(self, lease: Lease, action: TerminalAction) -> Lease | None:
        if lease.state is not LeaseState.ACTIVE and lease.terminal_action != action.action:
            raise AlreadySettledError(lease.terminal_action or "")
        if lease.state is LeaseState.SETTLED:
            return None
        return await self.leases.replace(
            attrs.evolve(
                lease,
                state=LeaseState.SETTLING,
                terminal_action=action.action,
                recorded=await self._recorded_earlier(lease),
            )
        )

    async def _settle(
        self,
        claimed: Lease,
        action: TerminalAction,
        worker_id: WorkerId | None,
        trace: TraceContext | None,
    ) -> Resolution:
        """Record the claimed action, then settle the delivery and mark the lease settled.

        Both at once, neither waiting for the other (a lease settled whose ack is lost is
        acked when its message comes back, see PollService), except for a pause, whose NAK
        comes first: a pause marked settled answers its retry as a replay, and its message
        must not come back after AckWait instead of after the pause. If the delivery is not
        settled, the action is done all the same (its event is out, its checkpoint saved): the
        lease is left settling and recorded, so that a retry only settles the delivery.
        """
        if not claimed.recorded:
            await self._record(claimed, action, worker_id or claimed.worker_id, trace)
        settled = attrs.evolve(claimed, state=LeaseState.SETTLED, deadline=self._deadline(claimed))
        if isinstance(action, Pause):
            try:
                await self._settle_delivery(claimed, action)
            except DomainError:
                await self._left_undelivered(claimed)
                raise
            await self.leases.replace(settled)
            return Resolution(action=action.action)
        delivered, marked = await together.outcomes(
            self._settle_delivery(claimed, action), self.leases.replace(settled)
        )
        for outcome in (delivered, marked):
            if isinstance(outcome, BaseException) and not isinstance(outcome, DomainError):
                raise outcome
        if isinstance(delivered, DomainError):
            await self._left_undelivered(claimed if isinstance(marked, BaseException) else marked)
            raise delivered
        if isinstance(marked, BaseException):
            raise marked
        return Resolution(action=action.action)

    async def _left_undelivered(self, latest: Lease) -> None:
        """The lease, at its latest revision, settling with its action recorded."""
        await self._best_effort(attrs.evolve(latest, state=LeaseState.SETTLING, recorded=True))

    async def _recorded_earlier(self, lease: Lease) -> bool:
        """Whether an earlier claim of the lease, cut short after its publish, got the event
        stored: only a lease found SETTLING is looked up (in the run's history, unless it
        says so itself); a first claim costs nothing more."""
        return lease.state is LeaseState.SETTLING and await event_recorded(self.events, lease)

    async def _record(
        self,
        claimed: Lease,
        action: TerminalAction,
        worker_id: WorkerId | None,
        trace: TraceContext | None,
    ) -> None:
        """Publish the terminal event (a pause: save its checkpoint). If that is refused
        nothing happened, so the claim is given up and the task takes any action again."""
        try:
            if isinstance(action, Pause):
                await self._save_pause_checkpoint(claimed, action)
            else:
                await self.events.append(self._terminal_event(claimed, action, worker_id, trace))
        except DomainError as exc:
            if not _maybe_published(claimed, exc):
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
        self,
        lease: Lease,
        action: Complete | Fail | Continue,
        worker_id: WorkerId | None,
        trace: TraceContext | None,
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
        return OutboundEvent(event=event, msg_id=msg_id, headers=trace_headers(trace))

    async def _save_pause_checkpoint(self, lease: Lease, action: Pause) -> None:
        """Decision 6: the given checkpoint, else the native marker for a name, else nothing."""
        value = action.checkpoint
        if value is None and action.name:
            value = pause_marker(action.name)
        if value is not None:
            bucket = required(await self.buckets.checkpoints(), "checkpoint")
            await bucket.put(lease.task_id, value)

    async def _apply(
        self,
        lease: Lease,
        action: Checkpoint | Heartbeat | Stream | SendSignal,
        trace: TraceContext | None,
    ) -> Resolution:
        if lease.state is not LeaseState.ACTIVE:
            raise AlreadySettledError(lease.terminal_action or "")
        if isinstance(action, Checkpoint):
            bucket = required(await self.buckets.checkpoints(), "checkpoint")
            await bucket.put(lease.task_id, action.data)
        elif isinstance(action, Stream):
            await self.streams.publish(
                lease.run_id, lease.step_id, action.data, trace_headers(trace)
            )
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


def _maybe_published(claimed: Lease, exc: DomainError) -> bool:
    """An event publish that got no answer may be stored all the same: its claim is kept, so
    that the retry asks the history before publishing again (only the same action may retry;
    a redelivery after AckWait hands the task out again if the event is not there)."""
    return isinstance(exc, BackendUnavailableError) and terminal_msg_id(claimed) is not None


def required(bucket: KeyValue | None, what: str) -> KeyValue:
    if bucket is None:
        raise BucketUnavailableError(what)
    return bucket
