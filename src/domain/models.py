"""The bridge's domain types: tasks, deliveries, leases, events, workers.

Raw JSON values (task input, outputs, checkpoints, signal data) are `RawJson`: the exact
bytes of a JSON value, passed through unchanged from request to wire.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import NewType

import attrs

TaskId = NewType("TaskId", str)
RunId = NewType("RunId", str)
StepId = NewType("StepId", str)
TaskType = NewType("TaskType", str)
LeaseId = NewType("LeaseId", str)
WorkerId = NewType("WorkerId", str)
PollId = NewType("PollId", str)
"""A client-chosen idempotency key of one poll (Decision 13)."""
DeliveryHandle = NewType("DeliveryHandle", str)
"""Opaque, serialisable token that settles one delivery (on JetStream: its reply subject)."""
RawJson = NewType("RawJson", bytes)


def task_id_of(run_id: RunId, step_id: StepId) -> TaskId:
    return TaskId(f"{run_id}.{step_id}")


@attrs.frozen(kw_only=True)
class TraceContext:
    """A W3C trace context as it travels in headers: `traceparent`, and `tracestate` when
    there is one (an orphan tracestate means nothing and is never kept)."""

    traceparent: str
    tracestate: str | None = None


@attrs.frozen(kw_only=True)
class TaskPayload:
    """A task message as the engine publishes it (PROTOCOL.md section 1.3)."""

    run_id: RunId
    step_id: StepId
    task_id: TaskId | None = None
    iteration: int = 0
    attempt: int = 0
    input: RawJson | None = None
    metadata: dict[str, str] | None = None
    required_capabilities: list[str] | None = None
    dispatch_nonce: str | None = None
    workflow_name: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None


@attrs.frozen(kw_only=True)
class Delivery:
    """One delivery of a task message by the work queue.

    `task` is None when the body could not be decoded into a task; `problem` then says why.
    """

    handle: DeliveryHandle
    task_type: TaskType
    delivery_count: int
    ack_wait: timedelta
    task: TaskPayload | None
    problem: str = ""
    headers: dict[str, str] = attrs.field(factory=dict)
    sequence: int = 0
    """The message's sequence in its stream: the same for every delivery of one message, so it
    tells a redelivery from a new message of the same task; 0 when unknown."""


class LeaseState(enum.Enum):
    ACTIVE = "active"
    SETTLING = "settling"
    """A terminal action has claimed the lease and its side effects are under way."""
    SETTLED = "settled"


@attrs.frozen(kw_only=True)
class Lease:
    """A delivery handed out to a poller, and what a resolve needs to settle it.

    `revision` is assigned by the lease store and used for compare-and-set.
    """

    task_id: TaskId
    run_id: RunId
    step_id: StepId
    task_type: TaskType
    lease_id: LeaseId
    handle: DeliveryHandle
    attempt: int
    iteration: int
    delivery_count: int
    ack_wait: timedelta
    deadline: datetime
    worker_id: WorkerId | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    state: LeaseState = LeaseState.ACTIVE
    terminal_action: str | None = None
    recorded: bool = False
    """The terminal action's event (a pause: its checkpoint) is stored; only the ack is left."""
    sequence: int = 0
    """The delivered message's stream sequence (`Delivery.sequence`); 0 when unknown."""
    revision: int = 0


class FailureType(enum.Enum):
    RETRIABLE = "retriable"
    NON_RETRIABLE = "non_retriable"
    RETRY_AFTER = "retry_after"


@attrs.frozen(kw_only=True)
class StepFailed:
    """Payload of a step.failed event."""

    error: str
    failure_type: FailureType
    retry_after_ms: int | None = None


@attrs.frozen(kw_only=True)
class Event:
    """A history event (PROTOCOL.md section 1.4); `msg_id` is its dedup identity."""

    type: str
    run_id: RunId
    step_id: StepId | None = None
    timestamp: datetime
    payload: RawJson | StepFailed | None = None
    trace_parent: str | None = None
    trace_state: str | None = None
    worker_id: WorkerId | None = None
    attempt_number: int | None = None


@attrs.frozen(kw_only=True)
class OutboundEvent:
    """An event to append, with its msg-id and the trace headers it travels with."""

    event: Event
    msg_id: str
    headers: dict[str, str] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class KvEntry:
    key: str
    value: bytes
    revision: int
    created: datetime


@attrs.frozen(kw_only=True)
class WorkerRegistration:
    """A worker's entry in the `workers` bucket (PROTOCOL.md section 6)."""

    worker_id: WorkerId
    task_types: list[TaskType]
    language: str
    transport: str
    max_tasks: int
    last_seen: datetime
    metadata: dict[str, str] | None = None


@attrs.frozen(kw_only=True)
class PolledTask:
    """One item of a poll answer."""

    task_id: TaskId
    run_id: RunId
    step_id: StepId
    attempt: int
    lease_id: LeaseId
    iteration: int = 0
    input: RawJson | None = None
    metadata: dict[str, str] | None = None
    workflow_name: str | None = None
    dispatch_nonce: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    checkpoint: RawJson | None = None
