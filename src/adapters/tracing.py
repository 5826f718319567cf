"""The Tracer port on the OpenTelemetry API, with W3C trace-context propagation.

Without an SDK the API records nothing and a span's context is its parent's, so trace
context still passes from task message to poll answer and events unchanged. The tracer of
the process's provider takes a shortcut there: while no provider is installed it makes no
span at all and hands on its parent's context as a span would (an API span cost 5 to 12 µs,
two per task).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Final

import attrs
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from domain.models import RunId, StepId, TaskId, TraceContext
from domain.telemetry import FAULTS, outcome_of
from domain.tracing import from_headers, trace_headers

SCOPE: Final = "dagnats/bridge"
"""The instrumentation scope, the Go bridge's."""
DISPATCH_SPAN: Final = "bridge.dispatch"
RESOLVE_SPAN: Final = "bridge.resolve"
OUTCOME: Final = "outcome"
"""The attribute that says how a span's work ended when an error cut it short."""


def _bridge_tracer() -> trace.Tracer:
    # A proxy: it records through whichever provider the process installs, even later.
    return trace.get_tracer(SCOPE)


@attrs.frozen
class OtelTracer:
    """Tracer: one span per call, a child of the given context (never of whatever span happens
    to be current), made current while its block runs. An error leaving the block sets the
    span's `outcome` (domain.telemetry's); only a fault also sets its status to ERROR, with
    the exception recorded."""

    tracer: trace.Tracer = attrs.field(factory=_bridge_tracer)
    propagator: TraceContextTextMapPropagator = attrs.field(factory=TraceContextTextMapPropagator)

    @classmethod
    def of(cls, provider: trace.TracerProvider) -> OtelTracer:
        """Spans recorded by `provider` instead of the process's global one."""
        return cls(provider.get_tracer(SCOPE))

    def _records_nothing(self) -> bool:
        """The process's tracer while no provider is installed: its spans would be the API's
        non-recording ones."""
        return isinstance(self.tracer, trace.ProxyTracer) and isinstance(
            trace.get_tracer_provider(), trace.ProxyTracerProvider
        )

    def dispatch(
        self, parent: TraceContext | None, *, run_id: RunId, step_id: StepId, attempt: int
    ) -> contextlib.AbstractContextManager[TraceContext | None]:
        attributes: Attributes = {"run_id": run_id, "step_id": step_id, "attempt": attempt}
        return self._span(DISPATCH_SPAN, parent, attributes)

    def resolve(
        self, parent: TraceContext | None, *, task_id: TaskId, action: str
    ) -> contextlib.AbstractContextManager[TraceContext | None]:
        return self._span(RESOLVE_SPAN, parent, {"task_id": task_id, "action": action})

    @contextlib.contextmanager
    def _span(
        self, name: str, parent: TraceContext | None, attributes: Attributes
    ) -> Iterator[TraceContext | None]:
        if self._records_nothing():
            # What a non-recording span would hand on: its parent's context, as extracted.
            yield None if parent is None else self._rendered(self._extracted(parent))
            return
        context = self._extracted(parent)
        span = self.tracer.start_span(name, context=context, attributes=attributes)
        with trace.use_span(
            span, end_on_exit=True, record_exception=False, set_status_on_exception=False
        ):
            try:
                yield self._context_of(span)
            except BaseException as exc:
                _record_failure(span, exc)
                raise

    def _context_of(self, span: trace.Span) -> TraceContext | None:
        """The span's W3C rendering; None for an invalid span (no SDK and no parent)."""
        return self._rendered(trace.set_span_in_context(span))

    def _extracted(self, parent: TraceContext | None) -> Context:
        # An invalid traceparent extracts to nothing: the span starts a trace of its own.
        return self.propagator.extract(trace_headers(parent), context=Context())

    def _rendered(self, context: Context) -> TraceContext | None:
        """The W3C rendering of the context's span; None for an invalid one."""
        carrier: dict[str, str] = {}
        self.propagator.inject(carrier, context=context)
        return from_headers(carrier)


def _record_failure(span: trace.Span, exc: BaseException) -> None:
    """A client's mistake is an outcome, not an error of the bridge's: it must not count in
    error rates."""
    outcome = outcome_of(exc)
    span.set_attribute(OUTCOME, outcome.value)
    if outcome in FAULTS:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
