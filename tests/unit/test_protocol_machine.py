"""The protocol as a state machine: enqueue, poll, resolve (every action), time passing.

Written against the ports through the use cases, so any backend can be held to it; here it
runs on the memory adapters with a manual clock.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from domain.errors import AlreadySettledError, StaleLeaseError, TaskNotFoundError
from domain.models import PolledTask, RunId, TaskType
from domain.protocol import STEP_COMPLETED, STEP_CONTINUE, STEP_FAILED, STEP_STARTED
from domain.services.simulator import EnqueueCommand
from tests.factories import ACK_WAIT, Harness

TASK_TYPE = TaskType("work")
TERMINAL_EVENTS = {STEP_COMPLETED, STEP_FAILED, STEP_CONTINUE}
FENCED_OUT = (StaleLeaseError, TaskNotFoundError, AlreadySettledError)


@attrs.define
class Held:
    """A task as its poller holds it, and what the test expects of it."""

    task: PolledTask
    settled_by: str | None = None


class ProtocolMachine(RuleBasedStateMachine):
    """The spec; a subclass runs it on another backend by giving its own `make_bridge`."""

    task_type: TaskType = TASK_TYPE
    run_prefix = "r"

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.bridge: Any = self.make_bridge()
        self.runs = 0
        self.held: list[Held] = []
        self.finished: set[str] = set()
        """Task ids completed, failed or continued: they must never be handed out again."""
        self.checkpoints: dict[str, bytes] = {}
        self.last_attempt: dict[str, int] = {}

    def make_bridge(self) -> Any:
        return Harness()

    def run(self, coroutine: Any) -> Any:
        return self.runner.run(coroutine)

    def run_id(self, number: int) -> RunId:
        return RunId(f"{self.run_prefix}{number}")

    def teardown(self) -> None:
        self.runner.close()

    def current(self) -> list[Held]:
        return [h for h in self.held if h.settled_by is None]

    @rule()
    def enqueue(self) -> None:
        self.runs += 1
        self.run(
            self.bridge.enqueue(
                EnqueueCommand(task_type=self.task_type, run_id=self.run_id(self.runs))
            )
        )

    @rule(max_tasks=st.integers(min_value=1, max_value=4))
    def poll(self, max_tasks: int) -> None:
        tasks = self.run(self.bridge.poll_now(self.task_type, max_tasks=max_tasks))

        assert len(tasks) <= max_tasks
        for task in tasks:
            assert task.task_id not in self.finished, "a finished task was handed out again"
            assert task.attempt > self.last_attempt.get(task.task_id, 0)
            assert task.checkpoint == self.checkpoints.get(task.task_id)
            self.assert_started_once(task)
            self.last_attempt[task.task_id] = task.attempt
            for older in self.held:
                if older.task.task_id == task.task_id and older.settled_by is None:
                    older.settled_by = "superseded"
            self.held.append(Held(task))

    def assert_started_once(self, task: PolledTask) -> None:
        started = [
            e
            for e in self.run(self.bridge.events.read(task.run_id))
            if e.type == STEP_STARTED and e.attempt_number == task.attempt
        ]
        assert len(started) == 1, "each hand-out is preceded by exactly one step.started"

    @precondition(lambda self: self.current())
    @rule(data=st.data(), action=st.sampled_from(["complete", "fail", "continue"]))
    def finish(self, data: st.DataObject, action: str) -> None:
        held = data.draw(st.sampled_from(self.current()))

        outcome = self.resolve(held, action, error="boom")

        if outcome is None:
            held.settled_by = action
            self.finished.add(held.task.task_id)

    @precondition(lambda self: self.current())
    @rule(data=st.data(), with_checkpoint=st.booleans(), name=st.sampled_from([None, "resume"]))
    def pause(self, data: st.DataObject, with_checkpoint: bool, name: str | None) -> None:
        held = data.draw(st.sampled_from(self.current()))
        checkpoint = f'{{"at": {len(self.held)}}}'.encode() if with_checkpoint else None

        outcome = self.resolve(held, "pause", duration_ms=1_000, checkpoint=checkpoint, name=name)

        if outcome is None:
            held.settled_by = "pause"
            if checkpoint is not None:
                self.checkpoints[held.task.task_id] = checkpoint
            elif name is not None:
                self.checkpoints[held.task.task_id] = b'{"pause_resume":"resume"}'

    @precondition(lambda self: self.current())
    @rule(data=st.data(), action=st.sampled_from(["heartbeat", "checkpoint", "stream", "signal"]))
    def extend(self, data: st.DataObject, action: str) -> None:
        held = data.draw(st.sampled_from(self.current()))
        task = held.task
        value = f'{{"n": {len(self.held)}}}'.encode()

        if action == "signal":
            self.resolve(held, "send_signal", run_id=task.run_id, name="s", data=value)
            outcome = self.run(
                self.bridge.resolve_action(task, "wait_signal", name="s", timeout_ms=1)
            )
            assert outcome.signal is not None
        else:
            outcome = self.resolve(held, action, data=value)
            if outcome is None and action == "checkpoint":
                self.checkpoints[task.task_id] = value

    @precondition(lambda self: any(h.settled_by is not None for h in self.held))
    @rule(data=st.data(), action=st.sampled_from(["complete", "fail", "pause", "heartbeat"]))
    def resolve_with_an_old_lease(self, data: st.DataObject, action: str) -> None:
        held = data.draw(st.sampled_from([h for h in self.held if h.settled_by is not None]))
        before = self.terminal_events()

        outcome = self.resolve(held, action, error="late", duration_ms=1)

        replay = outcome is None and action == held.settled_by
        assert replay or isinstance(outcome, FENCED_OUT), outcome
        assert self.terminal_events() == before, "a stale lease settled a newer delivery"

    @rule(seconds=st.sampled_from([1, 5, 31, ACK_WAIT.total_seconds() + 31]))
    def advance(self, seconds: float) -> None:
        self.bridge.clock.advance(timedelta(seconds=seconds))
        for held in self.current():
            if self.bridge.clock.now() >= self.lease_deadline(held):
                held.settled_by = "expired"

    def lease_deadline(self, held: Held) -> Any:
        lease = self.run(self.bridge.leases.get(held.task.task_id))
        if lease is None or lease.lease_id != held.task.lease_id:
            return self.bridge.clock.now()
        return lease.deadline

    def resolve(self, held: Held, action: str, **fields: Any) -> Exception | None:
        """None when applied; the domain error when fenced out."""
        try:
            self.run(
                self.bridge.resolve_action(held.task, action, lease_id=held.task.lease_id, **fields)
            )
        except FENCED_OUT as exc:
            return exc
        return None

    def terminal_events(self) -> Counter[tuple[str, str, int | None]]:
        counts: Counter[tuple[str, str, int | None]] = Counter()
        for run in range(1, self.runs + 1):
            for event in self.run(self.bridge.events.read(self.run_id(run))):
                if event.type in TERMINAL_EVENTS:
                    counts[(event.run_id, event.type, event.attempt_number)] += 1
        return counts

    @invariant()
    def at_most_one_terminal_event_per_delivery(self) -> None:
        per_attempt: Counter[tuple[str, int]] = Counter()
        for run in range(1, self.runs + 1):
            attempts = [
                e.attempt_number
                for e in self.run(self.bridge.events.read(self.run_id(run)))
                if e.type in {STEP_COMPLETED, STEP_FAILED}
            ]
            per_attempt.update((self.run_id(run), a or 0) for a in attempts)
        assert all(count == 1 for count in per_attempt.values())

    @invariant()
    def msg_ids_are_unique_per_event_and_attempt(self) -> None:
        for run in range(1, self.runs + 1):
            ids = self.msg_ids(self.run_id(run))
            assert len(ids) == len(set(ids))

    def msg_ids(self, run_id: RunId) -> list[str]:
        return [o.msg_id for o in self.bridge.events.outbound(run_id)]


def test_the_protocol_holds_on_the_memory_backend() -> None:
    run_state_machine_as_test(ProtocolMachine)
