"""DagNats protocol rules the domain needs: event types, msg-ids, limits and validators.

Pure functions, so each rule is property-tested on its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Final

from domain.errors import InvalidRequestError
from domain.models import (
    FailureType,
    PollId,
    RawJson,
    RunId,
    StepFailed,
    StepId,
    TaskId,
    TaskType,
)

STEP_STARTED: Final = "step.started"
STEP_COMPLETED: Final = "step.completed"
STEP_FAILED: Final = "step.failed"
STEP_CONTINUE: Final = "step.continue"
WORKFLOW_COMPLETED: Final = "workflow.completed"
WORKFLOW_FAILED: Final = "workflow.failed"
RETRY_BACKOFF: Final = "retry_backoff"
RETRY_AFTER: Final = "retry_after"

MIN_ATTEMPT: Final = 1
MAX_ATTEMPT: Final = 100_000
MAX_TASK_TYPE_BYTES: Final = 128
MAX_POLL_TASKS: Final = 256
DEFAULT_POLL_TIMEOUT_MS: Final = 5_000
MAX_POLL_TIMEOUT_MS: Final = 60_000
MAX_PAUSE_MS: Final = 3_600_000
MAX_SIGNAL_WAIT_MS: Final = 3_600_000
MIN_RETRY_AFTER_MS: Final = 100
MAX_RETRY_AFTER_MS: Final = 3_600_000
ENGINE_MIN_RETRY_AFTER_MS: Final = 100
"""The engine's floor for a retry_after of 0 or less (retry_handlers.go: scheduleRetryAfter)."""
ENGINE_MAX_TIMER_MS: Final = 3_600_000
"""The engine caps every retry timer (backoff and retry_after) at one hour."""
ENGINE_MIN_BACKOFF_MS: Final = 1
"""The engine waits at least a millisecond before a retry."""
DISPATCH_FAILURE_DELAY: Final = timedelta(seconds=5)
SIGNAL_WAIT_TICK: Final = timedelta(seconds=15)
LEASE_GRACE: Final = timedelta(seconds=30)
"""A lease outlives the consumer's AckWait by this much (Decision 8)."""
POLL_REPLAY_WINDOW: Final = timedelta(seconds=60)
"""How long a repeat of a poll with the same poll_id answers the same tasks (Decision 13)."""
MAX_POLL_ID_CHARS: Final = 128
MAX_NAME_BYTES: Final = 256
"""The longest id or name a client gives that the bridge makes subjects and KV keys of
(worker ids, a signal's run id and name, the run and step ids of the simulator's tasks; the
queue's tasks are held to it too). A NATS server
closes the connection of a client that sends a protocol line over 4 KB (its subject
included), and every request on that connection fails until it reconnects."""
MAX_TASK_ID_BYTES: Final = 2 * MAX_NAME_BYTES + 1
"""`<run>.<step>`, or a signal's `<run>.<name>`."""
MAX_KV_KEY_BYTES: Final = 3072
"""What a KV adapter stores under at most: the longest key the bridge makes (a worker's index
key of a lease: a worker id and a task id with every byte escaped, three bytes each, about
2.4 KB) fits, and the subjects of a key's reads and writes stay below 4 KB."""
UNSPECIFIED_ERROR: Final = "unspecified error"
RESOLVE_ACTIONS: Final = frozenset(
    {
        "complete",
        "fail",
        "pause",
        "checkpoint",
        "heartbeat",
        "stream",
        "continue",
        "send_signal",
        "wait_signal",
    }
)
"""The names of the nine resolve actions (domain.services.actions parses each one)."""
FAILURE_TYPE_ALIASES: Final = {"permanent": FailureType.NON_RETRIABLE}

_RETRIABLE: Final = FailureType.RETRIABLE
_POLL_ID: Final = re.compile(r"[A-Za-z0-9_-]+")
_KV_KEY: Final = re.compile(r"[-/_=a-zA-Z0-9]+(\.[-/_=a-zA-Z0-9]+)*")
_TASK_TYPE_BYTES: Final = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
)


def event_msg_id(run_id: RunId, step_id: StepId, event_type: str, attempt: int) -> str:
    """`<run>.<step>.<type>[.<attempt>]`: the attempt is left out when it is 0."""
    base = f"{run_id}.{step_id}.{event_type}"
    return f"{base}.{attempt}" if attempt > 0 else base


def continue_msg_id(run_id: RunId, step_id: StepId, iteration: int, lease_id: str) -> str:
    """Deterministic per delivery, so a retried continue is deduplicated (Decision 7)."""
    return f"{run_id}.{step_id}.continue.{iteration}.{lease_id}"


def queued_msg_id(run_id: RunId, step_id: StepId) -> str:
    """The msg-id the engine gives a task's first dispatch."""
    return f"{run_id}.{step_id}.queued"


def retry_msg_id(run_id: RunId, step_id: StepId, kind: str, attempts: int) -> str:
    """The engine's retry re-publish: `<run>.<step>.<retry_backoff|retry_after>.<A>`, where A
    is the number of attempts already started (PROTOCOL.md 1.3)."""
    return f"{run_id}.{step_id}.{kind}.{attempts}"


def iteration_msg_id(run_id: RunId, step_id: StepId, iteration: int) -> str:
    """The engine's agent-loop re-publish for iteration N: `<run>.<step>.continue.<N>`."""
    return f"{run_id}.{step_id}.continue.{iteration}"


def signal_key(run_id: RunId, name: str) -> str:
    """A signal's key in the `signals` bucket."""
    return f"{run_id}.{name}"


def workflow_msg_id(run_id: RunId, event_type: str) -> str:
    """A workflow event has no step, and the engine leaves the step segment out."""
    return f"{run_id}.{event_type}"


def engine_retry_after(retry_after_ms: int | None) -> timedelta:
    """The delay the engine waits for a retry_after failure: 0 or less (or none) is 100 ms,
    more than an hour is an hour."""
    if retry_after_ms is None or retry_after_ms <= 0:
        return timedelta(milliseconds=ENGINE_MIN_RETRY_AFTER_MS)
    return timedelta(milliseconds=min(retry_after_ms, ENGINE_MAX_TIMER_MS))


def pause_marker(name: str) -> RawJson:
    """The checkpoint a native worker's Pause(name) writes."""
    return RawJson(json.dumps({"pause_resume": name}, separators=(",", ":")).encode())


def go_quote(text: str) -> str:
    """A string quoted as Go's %q quotes it, so clients matching on Go messages still match."""
    return json.dumps(text, ensure_ascii=False)


def validate_task_type(task_type: str) -> TaskType:
    """The Go bridge's rules, in its order, with its messages (PROTOCOL.md section 2.4)."""
    raw = task_type.encode()
    if not raw:
        raise InvalidRequestError("task_types entries must not be empty", "task_types")
    if len(raw) > MAX_TASK_TYPE_BYTES:
        raise InvalidRequestError(f"task type exceeds {MAX_TASK_TYPE_BYTES} bytes", "task_types")
    if task_type.startswith(".") or task_type.endswith("."):
        raise InvalidRequestError(
            f"invalid task type {go_quote(task_type)}: must not start or end with '.'",
            "task_types",
        )
    if ".." in task_type:
        raise InvalidRequestError(
            f"invalid task type {go_quote(task_type)}: empty subject token", "task_types"
        )
    for char in task_type:
        if len(char.encode()) != 1 or char.encode()[0] not in _TASK_TYPE_BYTES:
            raise InvalidRequestError(
                f"invalid task type {go_quote(task_type)}: illegal character {go_quote(char)}",
                "task_types",
            )
    return TaskType(task_type)


def validate_task_types(task_types: Sequence[str]) -> list[TaskType]:
    if not task_types:
        raise InvalidRequestError("task_types is required", "task_types")
    validated = [validate_task_type(t) for t in task_types]
    return list(dict.fromkeys(validated))


def clamp_max_tasks(max_tasks: int) -> int:
    """0 or less means 1; the Go bridge has no upper bound (B10), this one has 256."""
    return min(max(max_tasks, 1), MAX_POLL_TASKS)


def poll_room(requested: int, cap: int | None, held: int) -> int:
    """How many tasks a poll may take (Decision 12): what it asked for, and no more than the
    worker's registered `max_tasks` less the leases it holds; 0 or less means none. A worker
    that is not connected has no cap (None)."""
    return requested if cap is None else min(requested, cap - held)


def validate_poll_id(value: str) -> PollId:
    """1 to 128 characters of [A-Za-z0-9_-]: a KV key of one token on every backend."""
    if len(value) > MAX_POLL_ID_CHARS or _POLL_ID.fullmatch(value) is None:
        raise InvalidRequestError(
            f"invalid poll_id {go_quote(value)}: use 1 to {MAX_POLL_ID_CHARS} letters, "
            "digits, - and _",
            "poll_id",
        )
    return PollId(value)


def poll_timeout(timeout_ms: int) -> timedelta:
    """0 or less means the 5 s default; more than 60 s is cut to 60 s."""
    if timeout_ms <= 0:
        timeout_ms = DEFAULT_POLL_TIMEOUT_MS
    return timedelta(milliseconds=min(timeout_ms, MAX_POLL_TIMEOUT_MS))


def parse_failure_type(value: str | None) -> FailureType:
    """Decision 5: the three engine types, `permanent` as non_retriable, empty as retriable."""
    if not value:
        return FailureType.RETRIABLE
    if value in FAILURE_TYPE_ALIASES:
        return FAILURE_TYPE_ALIASES[value]
    try:
        return FailureType(value)
    except ValueError:
        raise InvalidRequestError(f"invalid failure_type: {value}", "failure_type") from None


def clamp_retry_after_ms(value: int) -> int:
    return min(max(value, MIN_RETRY_AFTER_MS), MAX_RETRY_AFTER_MS)


def engine_failure(payload: RawJson | StepFailed | None) -> StepFailed:
    """A step.failed payload as the engine reads it (PROTOCOL.md 8).

    Only an object with a non-empty `error` keeps its failure_type; anything else (no payload,
    `"error":""`, a bare string, text that is not JSON) is retriable. An unknown failure_type
    is retriable too.
    """
    if isinstance(payload, StepFailed):
        if payload.error:
            return payload
        return StepFailed(error="", failure_type=_RETRIABLE)
    try:
        value = json.loads(payload) if payload else None
    except ValueError:
        return StepFailed(error=(payload or b"").decode(errors="replace"), failure_type=_RETRIABLE)
    if isinstance(value, dict) and isinstance(value.get("error"), str) and value["error"]:
        try:
            failure_type = FailureType(value.get("failure_type") or _RETRIABLE.value)
        except ValueError:
            failure_type = _RETRIABLE
        retry_after = value.get("retry_after_ms")
        return StepFailed(
            error=value["error"],
            failure_type=failure_type,
            retry_after_ms=retry_after if isinstance(retry_after, int) else None,
        )
    if isinstance(value, str):
        return StepFailed(error=value, failure_type=_RETRIABLE)
    return StepFailed(error=(payload or b"").decode(errors="replace"), failure_type=_RETRIABLE)


def require_duration_ms(value: int | None, field: str, upper: int) -> timedelta:
    """A duration in (0, upper] milliseconds, else 400 with the Go message."""
    if value is None or not 0 < value <= upper:
        raise InvalidRequestError(f"{field} must be in (0, {upper}]", field)
    return timedelta(milliseconds=value)


def attempt_of(payload_attempt: int, delivery_count: int) -> int:
    """The payload's attempt when positive, else the delivery count (PROTOCOL.md 1.4)."""
    return payload_attempt if payload_attempt > 0 else delivery_count


def is_valid_attempt(attempt: int) -> bool:
    return MIN_ATTEMPT <= attempt <= MAX_ATTEMPT


def validate_id_token(value: str, field: str) -> str:
    """A run or step id the bridge mints subjects and keys from: one subject token."""
    _within(value, field, MAX_NAME_BYTES)
    if not value or not all(char.isascii() and (char.isalnum() or char in "_-") for char in value):
        raise InvalidRequestError(f"invalid {field} {value!r}: use letters, digits, - and _", field)
    return value


def bounded_task_id(value: str) -> TaskId:
    """A task id a client names: one longer than any task id can be is refused, naming
    `task_id`, before it reaches a subject or a key."""
    _within(value, "task_id", MAX_TASK_ID_BYTES)
    return TaskId(value)


def is_kv_key(value: str) -> bool:
    """NATS KV's alphabet, in dot-separated tokens none of which is empty, and a length a KV
    adapter stores under."""
    return len(value) <= MAX_KV_KEY_BYTES and _KV_KEY.fullmatch(value) is not None


def validate_kv_key(value: str, field: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """A value the bridge stores under as (part of) a KV key: signal names, worker ids; by
    default of a name's length."""
    _within(value, field, max_bytes)
    if _KV_KEY.fullmatch(value) is None:
        raise InvalidRequestError(
            f"invalid {field} {go_quote(value)}: use letters, digits and - / _ = "
            "in dot-separated parts, none of them empty",
            field,
        )
    return value


def _within(value: str, field: str, max_bytes: int) -> None:
    if len(value.encode()) > max_bytes:
        raise InvalidRequestError(f"{field} exceeds {max_bytes} bytes", field)
