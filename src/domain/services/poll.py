"""Poll: hand out tasks under leases, each preceded by its step.started event; caps per
worker (Decision 12) and replays by poll_id (Decision 13)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import NamedTuple

import attrs

from domain.errors import DomainError, LeaseRevisionError
from domain.models import (
    Delivery,
    Event,
    Lease,
    LeaseId,
    LeaseState,
    OutboundEvent,
    PolledTask,
    PollId,
    RawJson,
    TaskId,
    TaskPayload,
    TaskType,
    TraceContext,
    WorkerId,
    task_id_of,
)
from domain.ports import (
    Clock,
    EventLog,
    IdSource,
    KeyValueBuckets,
    LeaseStore,
    PollAnswerStore,
    TaskQueue,
    Telemetry,
    Tracer,
    WorkerDirectory,
)
from domain.protocol import (
    DISPATCH_FAILURE_DELAY,
    LEASE_GRACE,
    MAX_NAME_BYTES,
    STEP_STARTED,
    attempt_of,
    event_msg_id,
    is_kv_key,
    is_valid_attempt,
    poll_room,
)
from domain.services import together
from domain.services.drain import Drain
from domain.services.flag import Flag
from domain.services.locks import KeyedLocks
from domain.services.release import RELEASE
from domain.services.settling import event_recorded, terminal_msg_id
from domain.telemetry import (
    NO_TELEMETRY,
    Outcome,
    PollReport,
    cause_of,
    outcome_of,
    report_poll,
)
from domain.tracing import NoTracer, delivery_trace, lease_trace, trace_headers

log = logging.getLogger(__name__)

NO_WAIT = timedelta(0)


@attrs.frozen(kw_only=True)
class PollCommand:
    task_types: list[TaskType]
    max_tasks: int
    timeout: timedelta
    worker_id: WorkerId | None = None
    poll_id: PollId | None = None
    abandoned: Flag | None = None
    """Set when the client has gone: the poll stops waiting and releases what it holds."""


class _Dispatched(NamedTuple):
    """A delivery handed out: its task, the lease stored for it and, for a redelivery, the
    checkpoint read once that lease was stored."""

    task: TaskPayload
    lease: Lease
    checkpoint: RawJson | None = None


@attrs.frozen(kw_only=True)
class PollService:
    """Long-poll the task types for up to `max_tasks` tasks within `timeout` in all.

    Answers as soon as it holds a task and nothing more is ready. A type that faults is
    left out of the rest of the poll; the poll fails only when it got nothing and a type
    faulted (the first fault is raised).

    With a `worker_id` that is connected (registered in `workers`), the worker's registered
    `max_tasks` caps its leases in flight: the poll takes at most that less the unsettled
    leases the worker holds, and answers [] at once when that is nothing. A worker_id that
    is not connected is served without a cap, as a poll without one is: the cap is the
    connected worker's own promise, and nothing else tells how much a stranger can take.

    With a `poll_id`, a non-empty answer is kept POLL_REPLAY_WINDOW, and a repeat answers
    the same tasks and leases (those still current and active) instead of fetching. Repeats
    in this process wait for the first to answer; an empty answer is not kept.
    """

    queue: TaskQueue
    events: EventLog
    leases: LeaseStore
    buckets: KeyValueBuckets
    workers: WorkerDirectory
    answers: PollAnswerStore
    clock: Clock
    ids: IdSource
    tracer: Tracer = attrs.field(factory=NoTracer)
    """A `bridge.dispatch` span per task handed out; none for a poll that finds nothing."""
    telemetry: Telemetry = NO_TELEMETRY
    drain: Drain = attrs.field(factory=Drain)
    """Once the process drains, a waiting poll answers at once with what it holds."""
    poll_locks: KeyedLocks = attrs.field(factory=KeyedLocks)
    worker_locks: KeyedLocks = attrs.field(factory=KeyedLocks)
    """Held while counting a capped worker's leases and taking tasks, so that this
    process's concurrent polls of one worker never take more than its cap together."""

    async def __call__(self, cmd: PollCommand) -> list[PolledTask]:
        """Reported once answered, failed or not: a log line per task (one for none), and
        the wait counted."""
        started = self.clock.now()
        try:
            tasks, replayed = await self._answer(cmd)
        except BaseException as exc:
            outcome = outcome_of(exc)
            self._report(cmd, started, outcome, [], cause_of(exc, outcome))
            raise
        self._report(cmd, started, self._outcome(cmd, tasks, replayed=replayed), tasks)
        return tasks

    def _report(
        self,
        cmd: PollCommand,
        started: datetime,
        outcome: Outcome,
        tasks: list[PolledTask],
        cause: str | None = None,
    ) -> None:
        report = PollReport(
            outcome=outcome,
            tasks=tasks,
            task_types=cmd.task_types,
            worker_id=cmd.worker_id,
            waited=self.clock.now() - started,
            cause=cause,
        )
        report_poll(self.telemetry, report)

    async def _answer(self, cmd: PollCommand) -> tuple[list[PolledTask], bool]:
        """The tasks, and whether they are a replay of an earlier answer."""
        if cmd.poll_id is None:
            return await self._poll(cmd), False
        async with self.poll_locks.hold(cmd.poll_id):
            replayed = await self._replay(cmd.poll_id)
            if replayed is not None:
                return replayed, True
            tasks = await self._poll(cmd)
            if tasks:
                await self._remember(cmd.poll_id, tasks)
            return tasks, False

    def _outcome(self, cmd: PollCommand, tasks: list[PolledTask], *, replayed: bool) -> Outcome:
        if replayed:
            return Outcome.REPLAYED
        if self._abandoned(cmd):
            return Outcome.ABANDONED
        return Outcome.HANDED_OUT if tasks else Outcome.EMPTY

    async def _poll(self, cmd: PollCommand) -> list[PolledTask]:
        deadline = self.clock.now() + cmd.timeout
        cap = await self._cap(cmd.worker_id)
        types = list(cmd.task_types)
        faults: list[DomainError] = []
        while True:
            async with self._counting(cmd.worker_id, cap):
                room = poll_room(cmd.max_tasks, cap, await self._in_flight(cmd.worker_id, cap))
                tasks = await self._fetch_pass(cmd, room, types, faults) if room > 0 else []
            left = deadline - self.clock.now()
            if tasks or room <= 0 or not types or left <= NO_WAIT or self._ends_early(cmd):
                break
            await self._wait(cmd, types, left)
            if self._ends_early(cmd):
                # No further pass: a task leased now would only be given back, its
                # step.started already out and an attempt of the engine's spent.
                break
        if self._abandoned(cmd):
            await self.release(tasks)
            return []
        if not tasks and faults:
            raise faults[0]
        return tasks

    async def _cap(self, worker_id: WorkerId | None) -> int | None:
        """The connected worker's registered max_tasks; None (no cap) for anyone else."""
        if worker_id is None:
            return None
        registration = await self.workers.get(worker_id)
        # A native registration may say 0 (unset): that promises nothing either.
        if registration is None or registration.max_tasks <= 0:
            return None
        return registration.max_tasks

    def _counting(
        self, worker_id: WorkerId | None, cap: int | None
    ) -> contextlib.AbstractAsyncContextManager[None]:
        if worker_id is None or cap is None:
            return contextlib.nullcontext()
        return self.worker_locks.hold(worker_id)

    async def _in_flight(self, worker_id: WorkerId | None, cap: int | None) -> int:
        """The worker's leases not settled yet (a settling one still holds its slot)."""
        if worker_id is None or cap is None:
            return 0
        return len(await self.leases.held_by(worker_id))

    async def _replay(self, poll_id: PollId) -> list[PolledTask] | None:
        """The kept answer, less the tasks whose lease was settled or superseded since."""
        answered = await self.answers.get(poll_id)
        if answered is None:
            return None
        held = [task for task in answered if await self._still_held(task)]
        log.info(
            "poll %s repeated: %d of its %d task(s) replayed", poll_id, len(held), len(answered)
        )
        return held

    async def _still_held(self, task: PolledTask) -> bool:
        lease = await self.leases.get(task.task_id)
        return (
            lease is not None
            and lease.lease_id == task.lease_id
            and lease.state is LeaseState.ACTIVE
        )

    async def _remember(self, poll_id: PollId, tasks: list[PolledTask]) -> None:
        """Keep the answer for repeats; if it cannot be kept, it is still given."""
        try:
            await self.answers.put(poll_id, tasks)
        except DomainError as exc:
            log.warning("answer of poll %s not kept, a repeat will poll anew: %s", poll_id, exc)

    async def release(self, tasks: list[PolledTask]) -> None:
        """Give back tasks nobody will resolve: NAK at once, lease dropped."""
        for task in tasks:
            lease = await self.leases.get(task.task_id)
            if lease is not None and lease.lease_id == task.lease_id:
                await self.queue.nak(lease.handle, NO_WAIT)
                await self.leases.delete(task.task_id, task.lease_id)
                log.info("released %s: its poller left before the answer", task.task_id)

    async def _wait(self, cmd: PollCommand, types: list[TaskType], left: timedelta) -> None:
        """Wait for a task to be ready, for the client to go, or for the drain to begin.

        A fault while waiting only ends the wait: the fetch pass that follows meets it again
        per type, and leaves out of the poll the type that faults (the others go on).
        """
        stops = [self.drain.when_begun()]
        if cmd.abandoned is not None:
            stops.append(cmd.abandoned.future())
        with contextlib.suppress(DomainError):
            await self.queue.wait_ready(types, left, until=stops)

    def _ends_early(self, cmd: PollCommand) -> bool:
        """The client has gone, or the process drains: stop waiting."""
        return self._abandoned(cmd) or self.drain.begun

    @staticmethod
    def _abandoned(cmd: PollCommand) -> bool:
        return cmd.abandoned is not None and cmd.abandoned.is_set()

    async def _fetch_pass(
        self, cmd: PollCommand, room: int, types: list[TaskType], faults: list[DomainError]
    ) -> list[PolledTask]:
        """One pass over the types in order, taking only what is ready now, at most `room`.

        If anything unexpected breaks the pass, what it already leased is released.
        """
        tasks: list[PolledTask] = []
        try:
            for task_type in list(types):
                remaining = room - len(tasks)
                if remaining <= 0:
                    break
                tasks.extend(await self._take(task_type, remaining, cmd.worker_id, types, faults))
        except BaseException:
            await asyncio.shield(self.release(tasks))
            raise
        return tasks

    async def _take(
        self,
        task_type: TaskType,
        remaining: int,
        worker_id: WorkerId | None,
        types: list[TaskType],
        faults: list[DomainError],
    ) -> list[PolledTask]:
        """What one type has ready, dispatched; a type that faults leaves the poll."""
        try:
            deliveries = await self.queue.fetch(task_type, remaining, NO_WAIT)
        except DomainError as exc:
            log.warning("poll of task type %s faulted: %s", task_type, exc)
            types.remove(task_type)
            faults.append(exc)
            return []
        if not deliveries:
            return []
        outcomes: tuple[object, ...] = await together.outcomes(
            self._saved_checkpoints(deliveries),
            *(self._dispatch(d, worker_id) for d in deliveries),
        )
        checkpoints = outcomes[0] if isinstance(outcomes[0], dict) else {}
        taken = [
            self._polled(o.task, o.lease, o.checkpoint or checkpoints.get(o.lease.task_id))
            for o in outcomes
            if isinstance(o, _Dispatched)
        ]
        unexpected = [
            o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, DomainError)
        ]
        if unexpected:
            await asyncio.shield(self.release(taken))
            raise unexpected[0]
        faults.extend(o for o in outcomes if isinstance(o, DomainError))
        return taken

    async def _saved_checkpoints(self, deliveries: list[Delivery]) -> dict[TaskId, RawJson]:
        """What a native worker's LoadCheckpoint would read, for each first delivery that has
        a checkpoint: one read for them all, at once with their dispatch. (A redelivery's is
        read once its earlier lease is fenced, see `_dispatch`: its holder may write one
        until then.) A read fault only leaves the checkpoints out."""
        task_ids = [
            task_id
            for delivery in deliveries
            if (task := delivery.task) is not None
            and delivery.delivery_count == 1
            and is_kv_key(task_id := task_id_of(task.run_id, task.step_id))
        ]
        return await self._saved_checkpoints_of(task_ids) if task_ids else {}

    async def _saved_checkpoints_of(self, task_ids: list[TaskId]) -> dict[TaskId, RawJson]:
        try:
            bucket = await self.buckets.checkpoints()
            entries = await bucket.get_many(task_ids) if bucket is not None else {}
        except DomainError as exc:
            log.warning("checkpoints of %s not read: %s", ", ".join(task_ids), exc)
            return {}
        return {TaskId(key): RawJson(entry.value) for key, entry in entries.items() if entry.value}

    async def _dispatch(self, delivery: Delivery, worker_id: WorkerId | None) -> _Dispatched | None:
        """Lease one delivery and publish its step.started; None when it is not handed out."""
        task = delivery.task
        problem = _malformed(delivery)
        if task is None or problem is not None:
            log.warning("malformed task consumed (%s): %s", delivery.task_type, problem)
            await self.queue.ack(delivery.handle)
            return None
        attempt = attempt_of(task.attempt, delivery.delivery_count)
        if task.attempt < 0 or not is_valid_attempt(attempt):
            log.warning(
                "poison task terminated: %s.%s has attempt %s (delivery %s)",
                task.run_id,
                task.step_id,
                task.attempt,
                delivery.delivery_count,
            )
            await self.queue.term(delivery.handle)
            return None
        if delivery.delivery_count > 1 and not await self._may_hand_out_again(delivery, task):
            return None
        with self.tracer.dispatch(
            delivery_trace(delivery), run_id=task.run_id, step_id=task.step_id, attempt=attempt
        ) as trace:
            lease = await self._lease_and_announce(
                delivery, self._new_lease(delivery, task, attempt, worker_id, trace)
            )
            self.telemetry.task_handed_out(delivery.task_type)
            if delivery.delivery_count == 1:
                return _Dispatched(task, lease)
            saved = await self._saved_checkpoints_of([lease.task_id])
            return _Dispatched(task, lease, saved.get(lease.task_id))

    async def _may_hand_out_again(self, delivery: Delivery, task: TaskPayload) -> bool:
        """Whether a redelivered message may be handed out in place of its earlier lease.

        Only redeliveries ask (a first delivery has no lease of its own to find). The task's
        lease of the same message, if it is:
        * settled with complete, fail or continue (SETTLED, or SETTLING with its event stored,
          as the lease or the run's history says): only its ack was lost, so the message is
          acked now and not handed out;
        * open (ACTIVE, or SETTLING with no event stored: an abandoned claim): it is fenced
          first, so that a resolve of it under way cannot claim it and publish any more;
        * of a pause or a release, whose NAK brought the message back: handed out.
        A lease of another message of the task, or none: handed out. If the lease cannot be
        read, the message comes back after DISPATCH_FAILURE_DELAY.
        """
        try:
            lease = await self.leases.get(task_id_of(task.run_id, task.step_id))
        except DomainError:
            await self.queue.nak(delivery.handle, DISPATCH_FAILURE_DELAY)
            raise
        if lease is None or not delivery.sequence or lease.sequence != delivery.sequence:
            return True
        if lease.state is LeaseState.ACTIVE:
            return await self._fenced(delivery, lease)
        if terminal_msg_id(lease) is None:
            return True
        if lease.state is LeaseState.SETTLED or await event_recorded(self.events, lease):
            await self._ack_settled(delivery, lease)
            return False
        return await self._fenced(delivery, lease)

    async def _fenced(self, delivery: Delivery, lease: Lease) -> bool:
        """Claim the open lease as a release does (compare-and-set), so that a resolve of it
        gets 409 from now on; False, with the message NAKed for DISPATCH_FAILURE_DELAY, when a
        resolve claimed it first (its redelivery then finds the lease settled)."""
        try:
            await self.leases.replace(
                attrs.evolve(lease, state=LeaseState.SETTLING, terminal_action=RELEASE)
            )
        except LeaseRevisionError:
            log.info("redelivery of %s held back: a resolve of it is under way", lease.task_id)
            await self.queue.nak(delivery.handle, DISPATCH_FAILURE_DELAY)
            return False
        except DomainError:
            await self.queue.nak(delivery.handle, DISPATCH_FAILURE_DELAY)
            raise
        return True

    async def _ack_settled(self, delivery: Delivery, lease: Lease) -> None:
        await self.queue.ack(delivery.handle)
        log.info(
            "redelivery of %s acked, not handed out: settled with %s, its ack was lost",
            lease.task_id,
            lease.terminal_action,
        )
        if lease.state is LeaseState.SETTLING:
            await self._mark_settled(lease)

    async def _mark_settled(self, lease: Lease) -> None:
        """Best effort: a resolve retried on the lease finds the event in the history anyway."""
        settled = attrs.evolve(
            lease,
            state=LeaseState.SETTLED,
            recorded=True,
            deadline=self.clock.now() + lease.ack_wait + LEASE_GRACE,
        )
        try:
            await self.leases.replace(settled)
        except DomainError as exc:
            log.warning("lease of %s not marked settled: %s", lease.task_id, exc)

    async def _lease_and_announce(self, delivery: Delivery, lease: Lease) -> Lease:
        """Store the lease and publish step.started, both at once (one round trip instead
        of two); both must be done before the hand-out.

        If either fails, a lease stored meanwhile is deleted and the delivery is NAKed for
        redelivery after DISPATCH_FAILURE_DELAY (a step.started already out is then followed
        by another attempt's, as when an answer never reaches its poller).
        """
        stored, published = await together.outcomes(
            self.leases.put(lease), self.events.append(self._started(lease))
        )
        for outcome in (stored, published):
            if isinstance(outcome, BaseException) and not isinstance(outcome, DomainError):
                raise outcome
        if isinstance(published, DomainError):
            log.warning(
                "step.started of %s not published, redelivery in %s: %s",
                lease.task_id,
                DISPATCH_FAILURE_DELAY,
                published,
            )
            self.telemetry.started_publish_failed(delivery.task_type)
        if isinstance(stored, BaseException):
            await self.queue.nak(delivery.handle, DISPATCH_FAILURE_DELAY)
            raise stored
        if isinstance(published, BaseException):
            await self.leases.delete(stored.task_id, stored.lease_id)
            await self.queue.nak(delivery.handle, DISPATCH_FAILURE_DELAY)
            raise published
        return stored

    def _new_lease(
        self,
        delivery: Delivery,
        task: TaskPayload,
        attempt: int,
        worker_id: WorkerId | None,
        trace: TraceContext | None,
    ) -> Lease:
        """The lease keeps the dispatch span's context: the poll item's, and the parent of
        its resolves that bring none of their own."""
        return Lease(
            task_id=task_id_of(task.run_id, task.step_id),
            run_id=task.run_id,
            step_id=task.step_id,
            task_type=delivery.task_type,
            lease_id=LeaseId(self.ids.new_id()),
            handle=delivery.handle,
            attempt=attempt,
            iteration=task.iteration,
            delivery_count=delivery.delivery_count,
            ack_wait=delivery.ack_wait,
            deadline=self.clock.now() + delivery.ack_wait + LEASE_GRACE,
            worker_id=worker_id,
            traceparent=trace.traceparent if trace is not None else None,
            tracestate=trace.tracestate if trace is not None else None,
            sequence=delivery.sequence,
        )

    def _started(self, lease: Lease) -> OutboundEvent:
        return OutboundEvent(
            event=Event(
                type=STEP_STARTED,
                run_id=lease.run_id,
                step_id=lease.step_id,
                timestamp=self.clock.now(),
                worker_id=lease.worker_id,
                attempt_number=lease.attempt,
            ),
            msg_id=event_msg_id(lease.run_id, lease.step_id, STEP_STARTED, lease.attempt),
            headers=trace_headers(lease_trace(lease)),
        )

    @staticmethod
    def _polled(task: TaskPayload, lease: Lease, checkpoint: RawJson | None) -> PolledTask:
        return PolledTask(
            task_id=lease.task_id,
            run_id=task.run_id,
            step_id=task.step_id,
            iteration=task.iteration,
            attempt=lease.attempt,
            lease_id=lease.lease_id,
            input=task.input,
            metadata=task.metadata,
            workflow_name=task.workflow_name,
            dispatch_nonce=task.dispatch_nonce,
            traceparent=lease.traceparent,
            tracestate=lease.tracestate,
            checkpoint=checkpoint,
        )


def _malformed(delivery: Delivery) -> str | None:
    """What makes the delivery's task one the bridge cannot hand out, if anything. A run or
    step id longer than a client's could be would make subjects and keys past what NATS
    takes, and a run the task's own send_signal could not name."""
    task = delivery.task
    if task is None or not (task.run_id and task.step_id):
        return delivery.problem or "run_id and step_id are required"
    for field, value in (("run_id", task.run_id), ("step_id", task.step_id)):
        if (size := len(value.encode())) > MAX_NAME_BYTES:
            return f"its {field} has {size} bytes, more than {MAX_NAME_BYTES}"
    return None
