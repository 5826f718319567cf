"""What the use cases report as they answer: one log line each, and the Telemetry port's counts.

The log lines carry their fields as `extra` keys (a JSON formatter writes them as keys); they
never carry a payload, a checkpoint or a signal value.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs

from domain.errors import (
    AlreadySettledError,
    InvalidRequestError,
    LeaseRevisionError,
    PayloadTooLargeError,
    SignalTimeoutError,
    StaleLeaseError,
    TaskNotFoundError,
)
from domain.models import Lease, PolledTask, TaskId, TaskType, WorkerId
from domain.protocol import RESOLVE_ACTIONS

if TYPE_CHECKING:
    from domain.ports import Telemetry

log = logging.getLogger("dagnats_bridge.requests")

INVALID_ACTION: Final = "invalid"
"""The action reported for a resolve whose action is missing or unknown (bounded labels)."""
QUIET_ACTIONS: Final = frozenset({"heartbeat", "checkpoint", "stream"})
"""Extensions a busy worker sends many times a second: logged at DEBUG once applied."""


class Outcome(enum.StrEnum):
    HANDED_OUT = "handed_out"
    EMPTY = "empty"
    REPLAYED = "replayed"
    ABANDONED = "abandoned"
    """The client left before the answer."""
    APPLIED = "applied"
    CONFLICT = "conflict"
    NOT_FOUND = "not_found"
    INVALID = "invalid"
    TIMED_OUT = "timed_out"
    FAILED = "failed"
    """A fault of the backend (or a bug): logged as a warning with its cause."""


FAULTS: Final = frozenset({Outcome.FAILED})
OUTCOME_OF_ERROR: Final[dict[type[BaseException], Outcome]] = {
    TaskNotFoundError: Outcome.NOT_FOUND,
    StaleLeaseError: Outcome.CONFLICT,
    AlreadySettledError: Outcome.CONFLICT,
    LeaseRevisionError: Outcome.CONFLICT,
    InvalidRequestError: Outcome.INVALID,
    PayloadTooLargeError: Outcome.INVALID,
    SignalTimeoutError: Outcome.TIMED_OUT,
    asyncio.CancelledError: Outcome.ABANDONED,
}


def outcome_of(exc: BaseException) -> Outcome:
    return next(
        (outcome for kind, outcome in OUTCOME_OF_ERROR.items() if isinstance(exc, kind)),
        Outcome.FAILED,
    )


def cause_of(exc: BaseException, outcome: Outcome) -> str | None:
    """Why it failed, for a fault; None for an outcome the client's request explains."""
    if outcome not in FAULTS:
        return None
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@attrs.frozen(kw_only=True)
class PollReport:
    outcome: Outcome
    tasks: Sequence[PolledTask]
    task_types: Sequence[TaskType]
    worker_id: WorkerId | None
    waited: timedelta
    cause: str | None = None
    """Why it failed, for a fault."""


@attrs.frozen(kw_only=True)
class ResolveReport:
    task_id: TaskId
    action: str
    """One of RESOLVE_ACTIONS, or INVALID_ACTION."""
    outcome: Outcome
    worker_id: WorkerId | None
    lease: Lease | None
    """The lease the resolve found; None when it found none."""
    duration: timedelta
    cause: str | None = None
    """Why it failed, for a fault."""


class ResolveAsked(Protocol):
    """What a report reads of a resolve request (domain.services.actions.ResolveRequest)."""

    @property
    def action(self) -> str: ...

    @property
    def worker_id(self) -> WorkerId | None: ...


@attrs.define
class ResolveNotes:
    """What a resolve has learnt so far. Mutable on purpose: the resolve notes the lease it
    finds, so that a resolve that fails later is still reported with its run and step."""

    task_id: TaskId
    request: ResolveAsked
    started: datetime
    lease: Lease | None = None

    def report(self, outcome: Outcome, now: datetime, cause: str | None = None) -> ResolveReport:
        action = self.request.action
        return ResolveReport(
            task_id=self.task_id,
            action=action if action in RESOLVE_ACTIONS else INVALID_ACTION,
            outcome=outcome,
            worker_id=self.request.worker_id or (self.lease.worker_id if self.lease else None),
            lease=self.lease,
            duration=now - self.started,
            cause=cause,
        )

    def failed(self, exc: BaseException, now: datetime) -> ResolveReport:
        outcome = outcome_of(exc)
        return self.report(outcome, now, cause=cause_of(exc, outcome))


@attrs.frozen
class NoTelemetry:
    """The Telemetry port that counts nothing (use cases built without metrics)."""

    def poll_answered(self, report: PollReport) -> None:
        pass

    def task_handed_out(self, task_type: TaskType) -> None:
        pass

    def started_publish_failed(self, task_type: TaskType) -> None:
        pass

    def resolved(self, report: ResolveReport) -> None:
        pass

    def workers_connected(self, count: int) -> None:
        pass


NO_TELEMETRY: Final = NoTelemetry()


def report_poll(telemetry: Telemetry, report: PollReport) -> None:
    log_poll(report)
    telemetry.poll_answered(report)


def report_resolve(telemetry: Telemetry, report: ResolveReport) -> None:
    log_resolve(report)
    telemetry.resolved(report)


def log_poll(report: PollReport) -> None:
    """One line per task handed out; an answer without tasks is one line, at DEBUG when it
    is merely empty (idle long-polls would otherwise fill the log); a fault is a warning
    that carries its cause."""
    common = {
        "action": "poll",
        "outcome": report.outcome.value,
        "worker_id": report.worker_id,
        "duration_ms": _ms(report.waited),
    }
    if not report.tasks:
        types = ",".join(report.task_types)
        log.log(
            _poll_level(report.outcome),
            "poll of %s: %s",
            types,
            report.outcome,
            extra={**common, "task_types": types, "cause": report.cause},
        )
    for task in report.tasks:
        fields = {
            **common,
            "task_id": task.task_id,
            "run_id": task.run_id,
            "step_id": task.step_id,
            "attempt": task.attempt,
        }
        log.info("poll %s %s", report.outcome.value, task.task_id, extra=fields)


def log_resolve(report: ResolveReport) -> None:
    """One line per resolve; a fault is a warning that carries its cause, and an applied
    extension (QUIET_ACTIONS) is at DEBUG."""
    fields: dict[str, Any] = {
        "task_id": report.task_id,
        "run_id": report.lease.run_id if report.lease else None,
        "step_id": report.lease.step_id if report.lease else None,
        "action": report.action,
        "outcome": report.outcome.value,
        "worker_id": report.worker_id,
        "duration_ms": _ms(report.duration),
        "cause": report.cause,
    }
    log.log(
        _resolve_level(report),
        "resolve %s %s: %s",
        report.task_id,
        report.action,
        report.outcome,
        extra=fields,
    )


def _poll_level(outcome: Outcome) -> int:
    if outcome in FAULTS:
        return logging.WARNING
    return logging.DEBUG if outcome is Outcome.EMPTY else logging.INFO


def _resolve_level(report: ResolveReport) -> int:
    """Terminal actions and anything refused stay at INFO: those are rare and tell a story."""
    if report.outcome in FAULTS:
        return logging.WARNING
    if report.action in QUIET_ACTIONS and report.outcome is Outcome.APPLIED:
        return logging.DEBUG
    return logging.INFO


def _ms(duration: timedelta) -> float:
    return round(duration.total_seconds() * 1000, 3)
