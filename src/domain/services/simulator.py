"""The simulator's engine side: enqueue tasks, put signals and move the clock as the DagNats
engine and other steps would."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import attrs

from domain.errors import InvalidRequestError
from domain.models import RawJson, RunId, StepId, TaskPayload, TaskType, task_id_of
from domain.ports import AdjustableClock, IdSource, KeyValueBuckets, TaskPublisher
from domain.protocol import queued_msg_id, signal_key, validate_id_token
from domain.services.actions import signal_to_send
from domain.services.engine import EngineSimulator
from domain.services.resolve import required
from domain.services.runs import SimulatedRuns
from domain.tracing import requested_trace

MAX_CLOCK_ADVANCE_MS: Final = 366 * 24 * 3_600_000
"""One request moves a manual clock by at most a (leap) year."""


@attrs.frozen(kw_only=True)
class EnqueueCommand:
    task_type: TaskType
    input: RawJson | None = None
    run_id: RunId | None = None
    step_id: StepId | None = None
    attempt: int = 0
    iteration: int = 0
    metadata: dict[str, str] | None = None
    traceparent: str | None = None
    """The engine's span the task continues: in the message's headers and body."""
    tracestate: str | None = None


@attrs.frozen(kw_only=True)
class EnqueueTask:
    """Publish a task message with the engine's subject and first-dispatch msg-id.

    Enqueueing the same run and step twice within the queue's duplicate window is a no-op,
    as it is on JetStream. With `runs`, the task starts a simulated run there (unless its
    run id is already running), for the engine simulation to follow.
    """

    publisher: TaskPublisher
    ids: IdSource
    runs: SimulatedRuns | None = None

    async def __call__(self, cmd: EnqueueCommand) -> TaskPayload:
        run_id = RunId(validate_id_token(cmd.run_id or f"run-{self.ids.new_id()}", "run_id"))
        step_id = StepId(validate_id_token(cmd.step_id or "step-1", "step_id"))
        for field, value in (("attempt", cmd.attempt), ("iteration", cmd.iteration)):
            if value < 0:
                raise InvalidRequestError(f"{field} must not be negative", field)
        trace = requested_trace(cmd.traceparent, cmd.tracestate)
        task = TaskPayload(
            task_id=task_id_of(run_id, step_id),
            run_id=run_id,
            step_id=step_id,
            iteration=cmd.iteration,
            attempt=cmd.attempt,
            input=cmd.input,
            metadata=cmd.metadata,
            traceparent=trace.traceparent if trace is not None else None,
            tracestate=trace.tracestate if trace is not None else None,
        )
        # Recorded before the publish, so the run is known when its step.started comes.
        run = self.runs.begin(cmd.task_type, task) if self.runs is not None else None
        try:
            await self.publisher.publish_task(
                cmd.task_type, task, msg_id=queued_msg_id(run_id, step_id)
            )
        except BaseException:
            if run is not None and self.runs is not None:
                self.runs.forget(run)
            raise
        return task


@attrs.frozen(kw_only=True)
class PutSignal:
    """Store a signal for a run, as another step's send_signal does (same checks, same key)."""

    buckets: KeyValueBuckets

    async def __call__(self, run_id: str | None, name: str | None, data: RawJson | None) -> None:
        signal = signal_to_send(run_id, name, data)
        bucket = required(await self.buckets.signals(), "signal")
        await bucket.put(signal_key(signal.run_id, signal.name), signal.data)


@attrs.frozen(kw_only=True)
class AdvanceClock:
    """Move the manual clock forward; with the engine simulation, return only once the
    retries that fell due have been re-published. `clock` is None when time is the system's."""

    clock: AdjustableClock | None
    engine: EngineSimulator | None = None

    async def __call__(self, ms: int | None) -> datetime:
        if self.clock is None:
            raise InvalidRequestError(
                "the clock is not manual: serve with --backend memory --clock manual"
            )
        if ms is None or not 0 < ms <= MAX_CLOCK_ADVANCE_MS:
            raise InvalidRequestError(f"ms must be in (0, {MAX_CLOCK_ADVANCE_MS}]", "ms")
        self.clock.advance(timedelta(milliseconds=ms))
        if self.engine is not None:
            await self.engine.settle()
        return self.clock.now()
