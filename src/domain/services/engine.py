"""The engine simulation: react to the bridge's events as the DagNats engine does.

PROTOCOL.md section 8, for the one-step runs the simulator enqueues: a failed step is
re-published after a backoff (or after its retry_after) until its attempts run out, a
continued step is re-published with the next iteration, and a completed or permanently
failed step ends its run with a `workflow.completed` / `workflow.failed` event. Re-publishes
carry the engine's msg-ids (PROTOCOL.md 1.3). Delays are measured on the Clock port.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Final, Protocol, Self

import attrs

from domain.errors import DomainError
from domain.models import Event, FailureType, OutboundEvent, RunId, TaskPayload, TaskType
from domain.ports import Clock, EventLog, TaskPublisher
from domain.protocol import (
    ENGINE_MAX_TIMER_MS,
    ENGINE_MIN_BACKOFF_MS,
    RETRY_AFTER,
    RETRY_BACKOFF,
    STEP_COMPLETED,
    STEP_CONTINUE,
    STEP_FAILED,
    STEP_STARTED,
    WORKFLOW_COMPLETED,
    WORKFLOW_FAILED,
    engine_failure,
    engine_retry_after,
    iteration_msg_id,
    retry_msg_id,
    workflow_msg_id,
)
from domain.services.runs import RunStatus, SimulatedRun, SimulatedRuns

log = logging.getLogger(__name__)

DEFAULT_MAX_ITERATIONS: Final = 10


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Exponential backoff, as the engine's `exponential` strategy computes it.

    `max_attempts` counts every attempt, the first one included: a failure of attempt
    `max_attempts` fails the run. (The engine's own MaxAttempts counts retries: it retries
    while attempts <= MaxAttempts, so it is this `max_attempts - 1`.)
    """

    max_attempts: int = attrs.field(default=3, validator=attrs.validators.ge(1))
    initial_delay: timedelta = attrs.field(default=timedelta(seconds=1))
    factor: float = attrs.field(default=2.0, validator=attrs.validators.gt(0))

    @initial_delay.validator
    def _not_negative(self, _: attrs.Attribute[timedelta], value: timedelta) -> None:
        if value < timedelta(0):
            raise ValueError("a retry delay is not negative")

    def delay_after(self, attempts: int) -> timedelta:
        """The wait before the next attempt, once `attempts` have started:
        `initial_delay * factor ** (attempts - 1)` in whole milliseconds, within [1 ms, 1 h]."""
        initial_ms = self.initial_delay / timedelta(milliseconds=1)
        try:
            delay_ms = initial_ms * self.factor ** (max(attempts, 1) - 1)
        except OverflowError:
            delay_ms = math.inf
        bounded = min(max(delay_ms, ENGINE_MIN_BACKOFF_MS), ENGINE_MAX_TIMER_MS)
        return timedelta(milliseconds=math.floor(bounded))


class EventObserver(Protocol):
    async def observe(self, event: Event) -> None:
        """Take note of an event that was just stored; must not raise a DomainError."""
        ...


@attrs.frozen
class ObservedEventLog:
    """An EventLog that tells an observer about each event it stores, once it is stored.

    A duplicate (an append the log drops) is not told. Only events appended through this
    object are seen: the bridge process's own.
    """

    inner: EventLog
    observer: EventObserver

    async def append(self, outbound: OutboundEvent) -> bool:
        stored = await self.inner.append(outbound)
        if stored:
            await self.observer.observe(outbound.event)
        return stored

    async def read(self, run_id: RunId) -> list[Event]:
        return await self.inner.read(run_id)

    async def contains(self, run_id: RunId, msg_id: str) -> bool:
        return await self.inner.contains(run_id, msg_id)


@attrs.frozen
class _Timer:
    task: asyncio.Task[None]
    due: datetime


_Handler = Callable[["EngineSimulator", SimulatedRun, Event], Awaitable[None]]


@attrs.define
class EngineSimulator:
    """React to the events of the simulated runs as the DagNats engine does.

    Use it as an async context manager (or `start()` / `stop()`): it reacts only while open,
    and closing cancels the retries still waiting, so no task outlives it. Reactions happen
    in `observe`, before the append that told it returns, except the delayed re-publishes,
    which wait on the clock in tasks of their own. Events of runs it did not enqueue, of
    another step, or of a finished run are ignored. A fault of the backend while reacting is
    logged, never raised into the bridge's own request.

    Mutable on purpose: it holds the pending retry timers.
    """

    publisher: TaskPublisher
    events: EventLog
    """The log the workflow events go to: the plain one, not the observed one."""
    clock: Clock
    runs: SimulatedRuns
    retry: RetryPolicy = attrs.field(factory=RetryPolicy, kw_only=True)
    max_iterations: int = attrs.field(
        default=DEFAULT_MAX_ITERATIONS, validator=attrs.validators.ge(1), kw_only=True
    )
    _timers: dict[RunId, _Timer] = attrs.field(init=False, factory=dict)
    _open: bool = attrs.field(init=False, default=False)

    def start(self) -> None:
        self._open = True

    async def stop(self) -> None:
        """Stop reacting and cancel the pending retries (their runs keep their state)."""
        self._open = False
        timers = list(self._timers.values())
        self._timers.clear()
        for timer in timers:
            timer.task.cancel()
        await asyncio.gather(*(timer.task for timer in timers), return_exceptions=True)

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def pending(self) -> int:
        """How many retries wait on the clock."""
        return len(self._timers)

    async def settle(self) -> None:
        """Return once every retry whose time has come on the clock has been re-published.

        After moving a manual clock, this makes the re-published tasks pollable at once.
        """
        now = self.clock.now()
        due = [timer.task for timer in self._timers.values() if timer.due <= now]
        if due:
            await asyncio.wait(due)

    async def observe(self, event: Event) -> None:
        if not self._open:
            return
        run = self.runs.get(event.run_id)
        if run is None or run.step_id != event.step_id or run.status is not RunStatus.RUNNING:
            return
        handler = _HANDLERS.get(event.type)
        if handler is None:
            return
        try:
            await handler(self, run, event)
        except DomainError as exc:
            log.warning(
                "engine simulation: %s of run %s not handled: %s", event.type, run.run_id, exc
            )

    async def _started(self, run: SimulatedRun, event: Event) -> None:
        self.runs.put(self._seen(run, event))

    async def _failed(self, run: SimulatedRun, event: Event) -> None:
        run = self._seen(run, event)
        failure = engine_failure(event.payload)
        if failure.failure_type is FailureType.NON_RETRIABLE:
            await self._end(run, WORKFLOW_FAILED, failure.error)
        elif run.attempts >= self.retry.max_attempts:
            reason = f"retries exhausted after {run.attempts} attempts: {failure.error}"
            await self._end(run, WORKFLOW_FAILED, reason)
        elif failure.failure_type is FailureType.RETRY_AFTER:
            self._retry(run, RETRY_AFTER, engine_retry_after(failure.retry_after_ms))
        else:
            self._retry(run, RETRY_BACKOFF, self.retry.delay_after(run.attempts))

    async def _continued(self, run: SimulatedRun, event: Event) -> None:
        run = self._seen(run, event)
        iteration = run.iteration + 1
        if iteration >= self.max_iterations:
            reason = f"agent loop exceeded max iterations ({self.max_iterations})"
            await self._end(run, WORKFLOW_FAILED, reason)
            return
        self.runs.put(attrs.evolve(run, iteration=iteration))
        # Not a new attempt: an iteration keeps the attempt count (engine: currentAttempt).
        task = attrs.evolve(run.task, iteration=iteration, attempt=run.attempts)
        msg_id = iteration_msg_id(run.run_id, run.step_id, iteration)
        await self.publisher.publish_task(run.task_type, task, msg_id=msg_id)

    async def _completed(self, run: SimulatedRun, event: Event) -> None:
        await self._end(self._seen(run, event), WORKFLOW_COMPLETED, None)

    @staticmethod
    def _seen(run: SimulatedRun, event: Event) -> SimulatedRun:
        attempts = max(run.attempts, event.attempt_number or 0)
        return attrs.evolve(run, attempts=attempts, last_event=event.type)

    def _retry(self, run: SimulatedRun, kind: str, delay: timedelta) -> None:
        """Re-publish the task as attempt A+1 once `delay` has passed on the clock."""
        attempts = max(run.attempts, 1)
        due = self.clock.now() + delay
        task = attrs.evolve(run.task, attempt=attempts + 1, iteration=run.iteration)
        msg_id = retry_msg_id(run.run_id, run.step_id, kind, attempts)
        self._cancel(run.run_id)
        timer = asyncio.ensure_future(self._fire(run.run_id, due, run.task_type, task, msg_id))
        self._timers[run.run_id] = _Timer(timer, due)
        timer.add_done_callback(lambda done: self._forget(run.run_id, done))
        self.runs.put(attrs.evolve(run, retry_at=due))
        log.info("run %s: attempt %s in %s (%s)", run.run_id, attempts + 1, delay, kind)

    async def _fire(
        self, run_id: RunId, due: datetime, task_type: TaskType, task: TaskPayload, msg_id: str
    ) -> None:
        while (left := due - self.clock.now()) > timedelta(0):
            await self.clock.sleep(left.total_seconds())
        run = self.runs.get(run_id)
        if run is None or run.status is not RunStatus.RUNNING:
            return
        self.runs.put(attrs.evolve(run, retry_at=None))
        try:
            await self.publisher.publish_task(task_type, task, msg_id=msg_id)
        except DomainError as exc:
            log.warning("engine simulation: retry of run %s not published: %s", run_id, exc)

    def _forget(self, run_id: RunId, done: asyncio.Task[None]) -> None:
        timer = self._timers.get(run_id)
        if timer is not None and timer.task is done:
            del self._timers[run_id]
        if not done.cancelled() and (exc := done.exception()) is not None:
            log.error("engine simulation: retry of run %s broke", run_id, exc_info=exc)

    def _cancel(self, run_id: RunId) -> None:
        timer = self._timers.pop(run_id, None)
        if timer is not None:
            timer.task.cancel()

    async def _end(self, run: SimulatedRun, event_type: str, error: str | None) -> None:
        """Finish the run, then tell the history as the engine does (no step, no payload)."""
        status = RunStatus.COMPLETED if event_type == WORKFLOW_COMPLETED else RunStatus.FAILED
        self._cancel(run.run_id)
        self.runs.put(
            attrs.evolve(run, status=status, error=error, retry_at=None, last_event=event_type)
        )
        event = Event(type=event_type, run_id=run.run_id, timestamp=self.clock.now())
        await self.events.append(
            OutboundEvent(event=event, msg_id=workflow_msg_id(run.run_id, event_type))
        )
        log.info("run %s %s", run.run_id, status.value)
        if error:
            # It may be the worker's own text, a payload: not at INFO.
            log.debug("run %s failed: %s", run.run_id, error)


_HANDLERS: Final[dict[str, _Handler]] = {
    STEP_STARTED: EngineSimulator._started,
    STEP_FAILED: EngineSimulator._failed,
    STEP_CONTINUE: EngineSimulator._continued,
    STEP_COMPLETED: EngineSimulator._completed,
}
