"""Poll: hand out tasks under leases, each preceded by its step.started event."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import attrs

from domain.errors import DomainError
from domain.models import (
    Delivery,
    Event,
    Lease,
    LeaseId,
    OutboundEvent,
    PolledTask,
    RawJson,
    TaskPayload,
    TaskType,
    WorkerId,
    task_id_of,
)
from domain.ports import Clock, EventLog, IdSource, KeyValueBuckets, LeaseStore, TaskQueue
from domain.protocol import (
    DISPATCH_FAILURE_DELAY,
    LEASE_GRACE,
    STEP_STARTED,
    attempt_of,
    event_msg_id,
    is_valid_attempt,
)

log = logging.getLogger(__name__)

NO_WAIT = timedelta(0)


@attrs.frozen(kw_only=True)
class PollCommand:
    task_types: list[TaskType]
    max_tasks: int
    timeout: timedelta
    worker_id: WorkerId | None = None
    abandoned: asyncio.Event | None = None
    """Set when the client has gone: the poll stops waiting and releases what it holds."""


@attrs.frozen(kw_only=True)
class PollService:
    """Long-poll the task types for up to `max_tasks` tasks within `timeout` in all.

    Answers as soon as it holds a task and nothing more is ready. A type that faults is
    left out of the rest of the poll; the poll fails only when it got nothing and a type
    faulted (the first fault is raised).
    """

    queue: TaskQueue
    events: EventLog
    leases: LeaseStore
    buckets: KeyValueBuckets
    clock: Clock
    ids: IdSource

    async def __call__(self, cmd: PollCommand) -> list[PolledTask]:
        deadline = self.clock.now() + cmd.timeout
        types = list(cmd.task_types)
        faults: list[DomainError] = []
        while True:
            tasks = await self._fetch_pass(cmd, types, faults)
            left = deadline - self.clock.now()
            if tasks or not types or left <= NO_WAIT or self._abandoned(cmd):
                break
            await self._wait(cmd, types, left)
        if self._abandoned(cmd):
            await self.release(tasks)
            return []
        if not tasks and faults:
            raise faults[0]
        return tasks

    async def release(self, tasks: list[PolledTask]) -> None:
        """Give back tasks nobody will resolve: NAK at once, lease dropped."""
        for task in tasks:
            lease = await self.leases.get(task.task_id)
            if lease is not None and lease.lease_id == task.lease_id:
                await self.queue.nak(lease.handle, NO_WAIT)
                await self.leases.delete(task.task_id, task.lease_id)
                log.info("released %s: its poller left before the answer", task.task_id)

    async def _wait(self, cmd: PollCommand, types: list[TaskType], left: timedelta) -> None:
        """Wait for a task to be ready, or for the client to go."""
        if cmd.abandoned is None:
            await self.queue.wait_ready(types, left)
            return
        waiters = {
            asyncio.ensure_future(self.queue.wait_ready(types, left)),
            asyncio.ensure_future(cmd.abandoned.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    @staticmethod
    def _abandoned(cmd: PollCommand) -> bool:
        return cmd.abandoned is not None and cmd.abandoned.is_set()

    async def _fetch_pass(
        self, cmd: PollCommand, types: list[TaskType], faults: list[DomainError]
    ) -> list[PolledTask]:
        """One pass over the types in order, taking only what is ready now.

        If anything unexpected breaks the pass, what it already leased is released.
        """
        tasks: list[PolledTask] = []
        try:
            for task_type in list(types):
                remaining = cmd.max_tasks - len(tasks)
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
        outcomes = await asyncio.gather(
            *(self._dispatch(d, worker_id) for d in deliveries), return_exceptions=True
        )
        taken = [o for o in outcomes if isinstance(o, PolledTask)]
        unexpected = [
            o for o in outcomes if isinstance(o, BaseException) and not isinstance(o, DomainError)
        ]
        if unexpected:
            await asyncio.shield(self.release(taken))
            raise unexpected[0]
        faults.extend(o for o in outcomes if isinstance(o, DomainError))
        return taken

    async def _dispatch(self, delivery: Delivery, worker_id: WorkerId | None) -> PolledTask | None:
        """Lease one delivery and publish its step.started; None when it is not handed out."""
        task = delivery.task
        if task is None or not (task.run_id and task.step_id):
            problem = delivery.problem or "run_id and step_id are required"
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
        lease = await self._lease(delivery, task, attempt, worker_id)
        try:
            await self.events.append(self._started(lease))
        except DomainError:
            await self.leases.delete(lease.task_id, lease.lease_id)
            await self.queue.nak(delivery.handle, DISPATCH_FAILURE_DELAY)
            raise
        return await self._polled(task, lease)

    async def _lease(
        self, delivery: Delivery, task: TaskPayload, attempt: int, worker_id: WorkerId | None
    ) -> Lease:
        traceparent = delivery.headers.get("traceparent") or task.traceparent
        tracestate = delivery.headers.get("tracestate") or task.tracestate
        try:
            return await self.leases.put(
                Lease(
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
                    traceparent=traceparent,
                    tracestate=tracestate if traceparent else None,
                )
            )
        except DomainError:
            await self.queue.nak(delivery.handle, DISPATCH_FAILURE_DELAY)
            raise

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
            headers=trace_headers(lease),
        )

    async def _polled(self, task: TaskPayload, lease: Lease) -> PolledTask:
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
            checkpoint=await self._saved_checkpoint(lease),
        )

    async def _saved_checkpoint(self, lease: Lease) -> RawJson | None:
        """What a native worker's LoadCheckpoint would read; a read fault only omits it."""
        try:
            bucket = await self.buckets.checkpoints()
            entry = await bucket.get(lease.task_id) if bucket is not None else None
        except DomainError as exc:
            log.warning("checkpoint of %s not read: %s", lease.task_id, exc)
            return None
        return RawJson(entry.value) if entry is not None and entry.value else None


def trace_headers(lease: Lease) -> dict[str, str]:
    """The W3C trace headers a lease's events travel with."""
    headers = {}
    if lease.traceparent:
        headers["traceparent"] = lease.traceparent
        if lease.tracestate:
            headers["tracestate"] = lease.tracestate
    return headers
