"""The nine resolve actions, and the pure function that reads one from a request."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar, Final

import attrs

from domain.errors import InvalidRequestError
from domain.models import FailureType, LeaseId, RawJson, RunId, StepFailed, WorkerId
from domain.protocol import (
    MAX_PAUSE_MS,
    MAX_SIGNAL_WAIT_MS,
    UNSPECIFIED_ERROR,
    clamp_retry_after_ms,
    parse_failure_type,
    require_duration_ms,
    validate_kv_key,
)


@attrs.frozen(kw_only=True)
class ResolveRequest:
    """A resolve body as the Go bridge reads it: every field optional until the action says."""

    action: str = ""
    lease_id: LeaseId | None = None
    worker_id: WorkerId | None = None
    output: RawJson | None = None
    error: str | None = None
    failure_type: str | None = None
    retry_after_ms: int | None = None
    name: str | None = None
    duration_ms: int | None = None
    checkpoint: RawJson | None = None
    data: RawJson | None = None
    run_id: str | None = None
    timeout_ms: int | None = None


@attrs.frozen
class Complete:
    action: ClassVar[str] = "complete"
    output: RawJson | None


@attrs.frozen
class Fail:
    action: ClassVar[str] = "fail"
    failure: StepFailed


@attrs.frozen(kw_only=True)
class Pause:
    action: ClassVar[str] = "pause"
    duration: timedelta
    checkpoint: RawJson | None
    name: str | None


@attrs.frozen
class Checkpoint:
    action: ClassVar[str] = "checkpoint"
    data: RawJson


@attrs.frozen
class Heartbeat:
    action: ClassVar[str] = "heartbeat"


@attrs.frozen
class Stream:
    action: ClassVar[str] = "stream"
    data: RawJson


@attrs.frozen
class Continue:
    action: ClassVar[str] = "continue"
    output: RawJson | None


@attrs.frozen(kw_only=True)
class SendSignal:
    action: ClassVar[str] = "send_signal"
    run_id: RunId
    name: str
    data: RawJson


@attrs.frozen(kw_only=True)
class WaitSignal:
    action: ClassVar[str] = "wait_signal"
    name: str
    timeout: timedelta


Action = (
    Complete | Fail | Pause | Checkpoint | Heartbeat | Stream | Continue | SendSignal | WaitSignal
)
TerminalAction = Complete | Fail | Pause | Continue
TERMINAL_ACTIONS: Final = frozenset(kind.action for kind in (Complete, Fail, Pause, Continue))


def parse_action(request: ResolveRequest) -> Action:
    """Validate the request for its action; InvalidRequestError names the field at fault."""
    if not request.action:
        raise InvalidRequestError("action is required", "action")
    if request.worker_id:
        validate_kv_key(request.worker_id, "worker_id")
    parser = _PARSERS.get(request.action)
    if parser is None:
        raise InvalidRequestError(f"invalid action: {request.action}", "action")
    return parser(request)


def _complete(request: ResolveRequest) -> Action:
    return Complete(request.output)


def _fail(request: ResolveRequest) -> Action:
    failure_type = parse_failure_type(request.failure_type)
    retry_after_ms = None
    if failure_type is FailureType.RETRY_AFTER:
        if request.retry_after_ms is None:
            raise InvalidRequestError(
                "retry_after_ms is required for failure_type retry_after", "retry_after_ms"
            )
        retry_after_ms = clamp_retry_after_ms(request.retry_after_ms)
    return Fail(
        StepFailed(
            error=request.error or UNSPECIFIED_ERROR,
            failure_type=failure_type,
            retry_after_ms=retry_after_ms,
        )
    )


def _pause(request: ResolveRequest) -> Action:
    duration = require_duration_ms(request.duration_ms, "duration_ms", MAX_PAUSE_MS)
    return Pause(duration=duration, checkpoint=request.checkpoint, name=request.name or None)


def _checkpoint(request: ResolveRequest) -> Action:
    return Checkpoint(_required_data(request))


def _heartbeat(_: ResolveRequest) -> Action:
    return Heartbeat()


def _stream(request: ResolveRequest) -> Action:
    return Stream(_required_data(request))


def _continue(request: ResolveRequest) -> Action:
    return Continue(request.output)


def _send_signal(request: ResolveRequest) -> Action:
    return signal_to_send(request.run_id, request.name, request.data)


def signal_to_send(run_id: str | None, name: str | None, data: RawJson | None) -> SendSignal:
    """A signal as send_signal validates it: run_id, then name (KV key tokens), then data."""
    run = _required_key_token(run_id, "run_id")
    signal_name = _required_key_token(name, "name")
    if data is None:
        raise InvalidRequestError("data is required", "data")
    return SendSignal(run_id=RunId(run), name=signal_name, data=data)


def _wait_signal(request: ResolveRequest) -> Action:
    name = _required_key_token(request.name, "name")
    timeout = require_duration_ms(request.timeout_ms, "timeout_ms", MAX_SIGNAL_WAIT_MS)
    return WaitSignal(name=name, timeout=timeout)


def _required_data(request: ResolveRequest) -> RawJson:
    if request.data is None:
        raise InvalidRequestError("data is required", "data")
    return request.data


def _required_key_token(value: str | None, field: str) -> str:
    if not value:
        raise InvalidRequestError(f"{field} is required", field)
    return validate_kv_key(value, field)


_PARSERS: Final = {
    "complete": _complete,
    "fail": _fail,
    "pause": _pause,
    "checkpoint": _checkpoint,
    "heartbeat": _heartbeat,
    "stream": _stream,
    "continue": _continue,
    "send_signal": _send_signal,
    "wait_signal": _wait_signal,
}
