"""The simulator's runs: what the engine would know of each run the simulator enqueued.

A simulated run has one step, the task first enqueued under its run id; the engine
simulation re-publishes that task (its input and metadata) for retries and iterations.
"""

from __future__ import annotations

import enum
import logging
from datetime import datetime
from typing import Final

import attrs

from domain.models import RunId, StepId, TaskPayload, TaskType

log = logging.getLogger(__name__)


class RunStatus(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


@attrs.frozen(kw_only=True)
class SimulatedRun:
    task_type: TaskType
    task: TaskPayload
    """The task as first enqueued: re-publishes keep its run, step, input and metadata."""
    status: RunStatus = RunStatus.RUNNING
    attempts: int = 0
    """Attempts started so far: the highest attempt number seen (the engine's max() rule)."""
    iteration: int = 0
    last_event: str | None = None
    """The type of the run's latest event, as the simulation saw or wrote it."""
    error: str | None = None
    """Why a failed run failed."""
    retry_at: datetime | None = None
    """When a scheduled retry re-publishes the task, while one is pending."""

    @property
    def run_id(self) -> RunId:
        return self.task.run_id

    @property
    def step_id(self) -> StepId:
        return self.task.step_id


FINISHED_RUNS_KEPT: Final = 10_000
"""About 0.4 KB each here, and 3 KB each of history with the memory backend."""


@attrs.define
class FinishedOrder:
    """The ids of the finished runs kept, the one that finished first first: at most `kept`.
    Mutable on purpose: runs finish and start again."""

    kept: int = attrs.field(validator=attrs.validators.gt(0))
    _ids: dict[RunId, None] = attrs.field(init=False, factory=dict)

    def __contains__(self, run_id: RunId) -> bool:
        return run_id in self._ids

    def finish(self, run_id: RunId) -> RunId | None:
        """Count the run as the one that finished last; the run to forget when that makes
        more than `kept`."""
        self._ids.pop(run_id, None)
        self._ids[run_id] = None
        if len(self._ids) <= self.kept:
            return None
        oldest = next(iter(self._ids))
        del self._ids[oldest]
        return oldest

    def reopen(self, run_id: RunId) -> None:
        """The run runs again (enqueued again under its id): it is not finished."""
        self._ids.pop(run_id, None)


@attrs.define
class SimulatedRuns:
    """The runs by id, in the order they were enqueued: every running run, and the
    `finished_kept` that finished last (the older ones are forgotten, so that a simulator
    under a long load stays within its memory).

    Mutable on purpose: it is the simulated engine's state, shared by the enqueue use case
    (which records runs) and the engine simulation (which moves them on). Process-local.
    """

    finished_kept: int = FINISHED_RUNS_KEPT
    _runs: dict[RunId, SimulatedRun] = attrs.field(init=False, factory=dict)
    _finished: FinishedOrder = attrs.field(init=False)

    @_finished.default
    def _finished_order(self) -> FinishedOrder:
        return FinishedOrder(self.finished_kept)

    def begin(self, task_type: TaskType, task: TaskPayload) -> SimulatedRun | None:
        """Record a new run for this first dispatch; None when the run id is already running
        (a repeated enqueue, or another step of a run, which the simulation does not follow)."""
        current = self._runs.get(task.run_id)
        if current is not None and current.status is RunStatus.RUNNING:
            if current.step_id != task.step_id:
                log.warning(
                    "run %s already runs step %s; the engine simulation ignores step %s",
                    task.run_id,
                    current.step_id,
                    task.step_id,
                )
            return None
        run = SimulatedRun(task_type=task_type, task=task, iteration=task.iteration)
        # A finished run enqueued again is a new run under the same id: it goes to the end.
        self._runs.pop(task.run_id, None)
        self._finished.reopen(task.run_id)
        self._runs[task.run_id] = run
        return run

    def forget(self, run: SimulatedRun) -> None:
        """Drop the run if it is still this record (its enqueue failed)."""
        if self._runs.get(run.run_id) is run:
            del self._runs[run.run_id]

    def get(self, run_id: RunId) -> SimulatedRun | None:
        return self._runs.get(run_id)

    def put(self, run: SimulatedRun) -> None:
        self._runs[run.run_id] = run
        if run.status is not RunStatus.RUNNING and run.run_id not in self._finished:
            forgotten = self._finished.finish(run.run_id)
            if forgotten is not None:
                del self._runs[forgotten]

    def all(self) -> list[SimulatedRun]:
        return list(self._runs.values())
