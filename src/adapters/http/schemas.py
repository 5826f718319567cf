"""Request bodies of the HTTP API, and their mapping to domain commands.

Every field is optional at decode time, as in the Go bridge, so that a missing field is
reported by the domain's validation with the Go message and the field's name.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from domain.errors import InvalidRequestError
from domain.models import RawJson, RunId, StepId, WorkerId
from domain.protocol import (
    clamp_max_tasks,
    poll_timeout,
    validate_kv_key,
    validate_poll_id,
    validate_task_types,
)
from domain.services.flag import Flag
from domain.services.poll import PollCommand
from domain.services.runs import SimulatedRun
from domain.services.simulator import EnqueueCommand
from domain.services.workers import ConnectCommand


@attrs.frozen(kw_only=True)
class ConnectBody:
    worker_id: str = ""
    task_types: list[str] = attrs.field(factory=list)
    max_tasks: int = 0
    metadata: dict[str, str] | None = None


@attrs.frozen(kw_only=True)
class PollBody:
    task_types: list[str] = attrs.field(factory=list)
    max_tasks: int = 0
    timeout_ms: int = 0
    worker_id: str | None = None
    poll_id: str | None = None


@attrs.frozen(kw_only=True)
class SimTaskBody:
    task_type: str = ""
    input: RawJson | None = None
    run_id: str | None = None
    step_id: str | None = None
    attempt: int = 0
    iteration: int = 0
    metadata: dict[str, str] | None = None
    traceparent: str | None = None
    tracestate: str | None = None


@attrs.frozen(kw_only=True)
class SimTaskCreated:
    task_id: str
    run_id: str
    step_id: str


@attrs.frozen(kw_only=True)
class SimSignalBody:
    run_id: str | None = None
    name: str | None = None
    data: RawJson | None = None


@attrs.frozen(kw_only=True)
class ClockAdvanceBody:
    ms: int | None = None


@attrs.frozen(kw_only=True)
class ClockView:
    now: datetime


@attrs.frozen(kw_only=True)
class SimRunView:
    """A run of the engine simulation; the optional fields are left out when unset."""

    run_id: str
    step_id: str
    task_type: str
    status: str
    attempts: int
    iteration: int
    last_event: str | None = None
    error: str | None = None
    retry_at: datetime | None = None


def to_run_view(run: SimulatedRun) -> SimRunView:
    return SimRunView(
        run_id=run.run_id,
        step_id=run.step_id,
        task_type=run.task_type,
        status=run.status.value,
        attempts=run.attempts,
        iteration=run.iteration,
        last_event=run.last_event,
        error=run.error,
        retry_at=run.retry_at,
    )


def to_connect_command(body: ConnectBody) -> ConnectCommand:
    if not body.worker_id:
        raise InvalidRequestError("worker_id is required", "worker_id")
    return ConnectCommand(
        worker_id=WorkerId(validate_kv_key(body.worker_id, "worker_id")),
        task_types=validate_task_types(body.task_types),
        max_tasks=clamp_max_tasks(body.max_tasks),
        metadata=body.metadata,
    )


def to_poll_command(body: PollBody, abandoned: Flag) -> PollCommand:
    return PollCommand(
        task_types=validate_task_types(body.task_types),
        max_tasks=clamp_max_tasks(body.max_tasks),
        timeout=poll_timeout(body.timeout_ms),
        worker_id=_worker_id(body.worker_id),
        poll_id=validate_poll_id(body.poll_id) if body.poll_id is not None else None,
        abandoned=abandoned,
    )


def _worker_id(worker_id: str | None) -> WorkerId | None:
    return WorkerId(validate_kv_key(worker_id, "worker_id")) if worker_id else None


def to_enqueue_command(body: SimTaskBody) -> EnqueueCommand:
    if not body.task_type:
        raise InvalidRequestError("task_type is required", "task_type")
    return EnqueueCommand(
        task_type=validate_task_types([body.task_type])[0],
        input=body.input,
        run_id=RunId(body.run_id) if body.run_id else None,
        step_id=StepId(body.step_id) if body.step_id else None,
        attempt=body.attempt,
        iteration=body.iteration,
        metadata=body.metadata,
        traceparent=body.traceparent,
        tracestate=body.tracestate,
    )
