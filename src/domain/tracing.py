"""W3C trace context as plain data: where a task's comes from, what headers carry it, and the
tracer that makes no spans."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from typing import Final

from domain.errors import InvalidRequestError
from domain.models import Delivery, Lease, RunId, StepId, TaskId, TaskPayload, TraceContext

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"

TRACEPARENT_PATTERN: Final = (
    r"(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}"
)
"""A W3C traceparent, whole (unanchored: anchor it where a schema needs it)."""
_TRACEPARENT: Final = re.compile(TRACEPARENT_PATTERN)

MAX_TRACESTATE_CHARS: Final = 512
"""W3C trace context: a tracestate of more may be dropped."""
TRACESTATE_PATTERN: Final = rf"[\x20-\x7e]{{1,{MAX_TRACESTATE_CHARS}}}"
"""A tracestate, loosely: printable ASCII within the W3C's size, its list left unparsed."""
_TRACESTATE: Final = re.compile(TRACESTATE_PATTERN)

SHOWN_CHARS: Final = 64
"""How much of a bad value an error message quotes: enough to recognise, not a body's worth."""


def trace_context(traceparent: str | None, tracestate: str | None = None) -> TraceContext | None:
    """The context, or None when the traceparent is absent or malformed: it is then ignored,
    as the W3C says, and a tracestate alone means nothing. A malformed tracestate is dropped,
    as the W3C says of one that cannot be parsed."""
    if traceparent is None or not is_traceparent(traceparent):
        return None
    if tracestate is not None and not is_tracestate(tracestate):
        tracestate = None
    return TraceContext(traceparent=traceparent, tracestate=tracestate)


def from_headers(headers: Mapping[str, str]) -> TraceContext | None:
    return trace_context(headers.get(TRACEPARENT), headers.get(TRACESTATE))


def trace_headers(trace: TraceContext | None) -> dict[str, str]:
    """The W3C headers that carry `trace`; none without one."""
    if trace is None:
        return {}
    headers = {TRACEPARENT: trace.traceparent}
    if trace.tracestate:
        headers[TRACESTATE] = trace.tracestate
    return headers


def delivery_trace(delivery: Delivery) -> TraceContext | None:
    """A task message's context: its headers', else its body's (PROTOCOL.md 1.3)."""
    if (from_message := from_headers(delivery.headers)) is not None:
        return from_message
    return task_trace(delivery.task) if delivery.task is not None else None


def task_trace(task: TaskPayload) -> TraceContext | None:
    """The context a task's body carries (the engine also sends it in the headers)."""
    return trace_context(task.traceparent, task.tracestate)


def lease_trace(lease: Lease) -> TraceContext | None:
    """The context the task was handed out in (its dispatch span's)."""
    return trace_context(lease.traceparent, lease.tracestate)


def is_traceparent(value: str) -> bool:
    """A version-00-shaped W3C traceparent whose trace and parent ids are not all zeros."""
    return _TRACEPARENT.fullmatch(value) is not None


def is_tracestate(value: str) -> bool:
    """1..512 printable ASCII characters (the list of vendor entries is not parsed)."""
    return _TRACESTATE.fullmatch(value) is not None


def requested_trace(traceparent: str | None, tracestate: str | None) -> TraceContext | None:
    """The context a request body names, where a malformed one is the caller's mistake (400,
    the field named) rather than something to ignore as in headers; an empty tracestate is
    none."""
    if traceparent is not None:
        validate_traceparent(traceparent)
    if tracestate and not is_tracestate(tracestate):
        raise InvalidRequestError(
            f"invalid {TRACESTATE} {_shown(tracestate)}: want 1..{MAX_TRACESTATE_CHARS} "
            "printable ASCII characters",
            TRACESTATE,
        )
    return trace_context(traceparent, tracestate)


def validate_traceparent(value: str, field: str = TRACEPARENT) -> str:
    if not is_traceparent(value):
        raise InvalidRequestError(
            f"invalid {field} {_shown(value)}: "
            "want 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>",
            field,
        )
    return value


def _shown(value: str) -> str:
    """The value quoted for an error message, cut short when long."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}… ({len(value)} characters)"


class NoTracer:
    """A Tracer that records nothing: a span's context is its parent's, as with OpenTelemetry's
    API when no SDK is installed, so trace context still passes through unchanged."""

    @contextlib.contextmanager
    def dispatch(
        self, parent: TraceContext | None, *, run_id: RunId, step_id: StepId, attempt: int
    ) -> Iterator[TraceContext | None]:
        yield parent

    @contextlib.contextmanager
    def resolve(
        self, parent: TraceContext | None, *, task_id: TaskId, action: str
    ) -> Iterator[TraceContext | None]:
        yield parent
