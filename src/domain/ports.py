"""Ports: what the domain needs from the outside world, as small async Protocols.

Adapters (memory, NATS) implement them without inheriting; every adapter is held to the
same contract tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Protocol

from domain.models import (
    Delivery,
    DeliveryHandle,
    Event,
    KvEntry,
    Lease,
    OutboundEvent,
    PolledTask,
    PollId,
    RawJson,
    RunId,
    StepId,
    TaskId,
    TaskPayload,
    TaskType,
    TraceContext,
    WorkerId,
    WorkerRegistration,
)
from domain.telemetry import PollReport, ResolveReport


class Clock(Protocol):
    """Time, so that expiry and redelivery are testable without sleeping."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` have passed on this clock."""
        ...


class AdjustableClock(Clock, Protocol):
    """A clock that moves only when told to (the simulator's manual clock)."""

    def advance(self, delta: timedelta) -> None:
        """Move time forward by `delta` and wake the sleepers whose time has come."""
        ...


class IdSource(Protocol):
    def new_id(self) -> str:
        """A fresh identifier, unique for the life of the deployment."""
        ...


class TaskQueue(Protocol):
    """The work-queue of task messages, one durable consumer per task type.

    A delivery stays pending until it is acked or termed; a NAK or an expired AckWait makes
    it deliverable again with a higher delivery count. Settling a handle is idempotent.
    """

    async def fetch(
        self, task_type: TaskType, max_messages: int, timeout: timedelta
    ) -> list[Delivery]:
        """Up to `max_messages` deliveries; returns as soon as at least one is ready.

        Raises ConsumerConflictError when the type's consumer collides with another,
        BackendUnavailableError / BackendError on broker faults.
        """
        ...

    async def wait_ready(
        self,
        task_types: Sequence[TaskType],
        timeout: timedelta,
        *,
        until: Collection[asyncio.Future[None]] = (),
    ) -> None:
        """Return when one of the types may have a deliverable message, on timeout, or as
        soon as one of `until` is done (the caller's own reasons to stop waiting, watched
        and never cancelled: a long-poll waits so without a task of its own).

        Spurious wake-ups are allowed; callers fetch again and wait again.
        """
        ...

    async def ack(self, handle: DeliveryHandle) -> None: ...

    async def nak(self, handle: DeliveryHandle, delay: timedelta) -> None: ...

    async def in_progress(self, handle: DeliveryHandle) -> None:
        """Reset the delivery's AckWait timer."""
        ...

    async def term(self, handle: DeliveryHandle) -> None:
        """Stop redelivering the message: it is poison."""
        ...


class TaskPublisher(Protocol):
    """What the engine does to enqueue a task (the simulator publishes through it)."""

    async def publish_task(self, task_type: TaskType, task: TaskPayload, *, msg_id: str) -> None:
        """Publish on `task.<type>.<run_id>`; a msg-id seen in the duplicate window is dropped."""
        ...


class EventLog(Protocol):
    async def append(self, outbound: OutboundEvent) -> bool:
        """Append the event unless its msg-id was seen within the dedup window.

        Returns False for a duplicate. Returns only once the event is durable.
        """
        ...

    async def read(self, run_id: RunId) -> list[Event]:
        """The run's events in append order."""
        ...

    async def contains(self, run_id: RunId, msg_id: str) -> bool:
        """Whether the run's history holds an event appended with `msg_id`, however long ago.

        Reads the run's whole history: for recovery after a fault, not for every request.
        """
        ...


class StreamPublisher(Protocol):
    async def publish(
        self,
        run_id: RunId,
        step_id: StepId,
        data: RawJson,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Fire-and-forget delivery of a stream chunk to subscribers of the step, with
        `headers` (the resolve span's trace context) on the message."""
        ...


class KeyValue(Protocol):
    """One KV bucket. A deleted key reads as absent."""

    async def get(self, key: str) -> KvEntry | None: ...

    async def get_many(self, keys: Sequence[str]) -> dict[str, KvEntry]:
        """The values of those of `keys` that have one, by key, read together: one round
        trip where the backend can."""
        ...

    async def put(self, key: str, value: bytes) -> int:
        """Store the value and return its revision."""
        ...

    async def delete(self, key: str) -> None: ...

    async def keys(self) -> list[str]:
        """Keys that currently hold a value."""
        ...

    async def wait_for_value(self, key: str, timeout: timedelta) -> KvEntry | None:
        """The key's value if it has one, else the first value put before the timeout.

        Delete and purge markers are not values. None on timeout.
        """
        ...


class KeyValueBuckets(Protocol):
    """The engine's optional buckets; None when the deployment lacks one."""

    async def checkpoints(self) -> KeyValue | None: ...

    async def signals(self) -> KeyValue | None: ...

    async def workers(self) -> KeyValue | None: ...


class LeaseStore(Protocol):
    """In-flight deliveries by task id, with compare-and-set on the lease's revision.

    A lease reads as absent once its deadline has passed.
    """

    async def get(self, task_id: TaskId) -> Lease | None: ...

    def recent(self, task_id: TaskId) -> Lease | None:
        """The live lease as this process last stored or read it, without asking the store;
        None when it knows none. It may have been superseded since (by another process):
        a replace of it then raises LeaseRevisionError."""
        ...

    async def put(self, lease: Lease) -> Lease:
        """Store a new current lease for the task, replacing any older one."""
        ...

    async def replace(self, lease: Lease) -> Lease:
        """Store `lease` only if the stored one still has `lease.revision`.

        Raises LeaseRevisionError otherwise. Returns the lease with its new revision.
        """
        ...

    async def delete(self, task_id: TaskId, lease_id: str) -> None:
        """Forget the lease if it is still the task's current one."""
        ...

    async def count(self) -> int: ...

    async def held_by(self, worker_id: WorkerId) -> list[Lease]:
        """The unexpired leases handed out to the worker and not settled (Decision 12)."""
        ...


class LeaseListing(Protocol):
    """A lease store that can list what it holds; only a store in this process's memory is
    asked to, since only its leases die with the process."""

    async def live(self) -> list[Lease]:
        """The unexpired leases, in any state."""
        ...


class PollAnswerStore(Protocol):
    """Answers of polls that carried a poll_id, for repeats of them (Decision 13).

    An answer is kept POLL_REPLAY_WINDOW from its put, then reads as absent; with a shared
    backend every replica reads what any replica put.
    """

    async def get(self, poll_id: PollId) -> list[PolledTask] | None: ...

    async def put(self, poll_id: PollId, tasks: Sequence[PolledTask]) -> None:
        """Keep the answer, replacing any earlier one under the same poll_id.

        PayloadTooLargeError when the backend cannot hold it in one value.
        """
        ...


class WorkerDirectory(Protocol):
    """Registrations of connected workers (the engine's `workers` bucket)."""

    async def register(self, registration: WorkerRegistration) -> None:
        """Put or refresh the registration; BucketUnavailableError when there is no bucket."""
        ...

    async def deregister(self, worker_id: WorkerId) -> None: ...

    async def get(self, worker_id: WorkerId) -> WorkerRegistration | None:
        """The worker's registration; None when it is not connected (or there is no bucket)."""
        ...

    async def list(self) -> list[WorkerRegistration]: ...


class Tracer(Protocol):
    """Spans of the bridge's own work (PROTOCOL.md 4.5, 7), continuing the caller's trace.

    Each method opens one span as a child of `parent` (a root span without one) and yields
    the span's own context, for the headers of what the block publishes and for the poll
    answer; None when there is nothing to pass on. An exception leaving the block marks the
    span failed when it is a fault (the backend's, or a bug); a client's mistake (bad input,
    no such task, a conflict, a timeout, a client that left) is recorded as the span's
    outcome instead, so error rates count faults only. Without a recording tracer the
    span's context is its parent's.
    """

    def dispatch(
        self, parent: TraceContext | None, *, run_id: RunId, step_id: StepId, attempt: int
    ) -> AbstractContextManager[TraceContext | None]:
        """`bridge.dispatch`: one task handed out, from its step.started to its poll item."""
        ...

    def resolve(
        self, parent: TraceContext | None, *, task_id: TaskId, action: str
    ) -> AbstractContextManager[TraceContext | None]:
        """`bridge.resolve`: one resolve of a task in flight, with the events it publishes."""
        ...


class BackendProbe(Protocol):
    async def check(self) -> None:
        """Return when the backend serves requests; raise BackendUnavailableError otherwise."""
        ...

    def lost_for_good(self) -> str | None:
        """Why this process can no longer reach the backend whatever becomes of it (only a
        restart helps), or None while it can."""
        ...


class Telemetry(Protocol):
    """Counts of what the use cases do, for metrics. Never raises and never blocks: the use
    cases call it on their answer path."""

    def poll_answered(self, report: PollReport) -> None: ...

    def task_handed_out(self, task_type: TaskType) -> None:
        """A delivery was leased and its step.started published."""
        ...

    def started_publish_failed(self, task_type: TaskType) -> None:
        """A delivery's step.started could not be published: NAKed, not handed out."""
        ...

    def resolved(self, report: ResolveReport) -> None: ...

    def workers_connected(self, count: int) -> None:
        """How many worker ids hold a connect session on this process now."""
        ...
