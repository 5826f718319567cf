"""The protocol as a state machine over HTTP: enqueue, poll, every resolve, stale leases,
replays and conflicts, with the run histories checked against a model after every step.

No time travel: nothing here waits for an AckWait to pass, and pauses are a few ms long.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections import Counter
from typing import Any, Final

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from conformance.client import Answer
from conformance.harness import TAKE_WITHIN_S, Harness, PolledItem
from conformance.spec import (
    EVENT_OF_ACTION,
    FENCED_OUT,
    REPLAYED_HEADER,
    STEP_ID,
    TERMINAL_ACTIONS,
    ViolationError,
    expect,
    expect_not_replayed,
    expect_status,
)
from conformance.targets import HistoryEvent, NewTask

STEP_STARTED: Final = "step.started"
ATTEMPTED_EVENTS: Final = ("step.started", "step.completed", "step.failed")
"""Events that carry the delivery's attempt_number, and whose msg-id ends with it."""
FAIL_BODY: Final = {"error": "boom", "failure_type": "non_retriable"}
"""non_retriable, so an engine simulation behind the bridge does not re-enqueue the task."""
WAIT_SIGNAL_MS: Final = 2_000
PAUSE_MS: Final = (1, 20)
PICK: Final = st.integers(min_value=0, max_value=63)
"""Which of the held tasks a rule works on. An index, not a `sampled_from` of the held
tasks: those depend on the bridge's answers, and Hypothesis needs draws that replay
identically whatever a live server does."""


@attrs.define
class Held:
    """A hand-out as its poller holds it. Mutable on purpose: how it was settled."""

    item: PolledItem
    attempt: int
    settled_by: str | None = None
    settling_body: dict[str, Any] = attrs.field(factory=dict)
    """The body of the terminal resolve that settled it."""


class ProtocolMachine(RuleBasedStateMachine):
    """Tasks of one step and run each, of the one task type every example shares: a type
    per example would leave a consumer and a metric label behind on the bridge for each.
    Run ids keep the examples apart; a task an earlier example left behind (a pause that
    came due, an iteration an engine re-enqueued) is completed and left out of the model.

    A rule with nothing to work on (no task held yet) does nothing."""

    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.harness = harness
        self.example = uuid.uuid4().hex[:8]
        self.task_type = harness.task_type("machine")
        self.runs: list[str] = []
        self.held: list[Held] = []
        self.lease_ids: set[str] = set()
        self.finished: set[str] = set()
        """Task ids completed or failed: never to be handed out again."""
        self.continued: set[str] = set()
        """Task ids continued: an engine may hand them out again, with the same attempt."""
        self.checkpoints: dict[str, Any] = {}
        self.settled: Counter[tuple[str, str, int | None]] = Counter()
        """(run, event type, attempt) of each terminal resolve that took effect."""
        self.handed_out: Counter[tuple[str, int]] = Counter()

    def current(self) -> list[Held]:
        return [h for h in self.held if h.settled_by is None]

    def settled_terminally(self) -> list[Held]:
        """Settled by a terminal action and not handed out again since."""
        return [
            h
            for h in self.held
            if h.settled_by in TERMINAL_ACTIONS and self.latest(h.item.task_id) is h
        ]

    def latest(self, task_id: str) -> Held | None:
        return next((h for h in reversed(self.held) if h.item.task_id == task_id), None)

    @initialize(runs=st.integers(min_value=1, max_value=3))
    def enqueue_and_poll(self, runs: int) -> None:
        """Start with tasks in hand, so that the first rules have something to resolve."""
        for _ in range(runs):
            self.enqueue()
        self.poll(runs)

    @rule()
    def enqueue(self) -> None:
        run_id = f"{self.harness.prefix}-{self.example}-r{len(self.runs)}"
        self.harness.target.enqueue(NewTask(task_type=self.task_type, run_id=run_id))
        self.runs.append(run_id)

    @rule(max_tasks=st.integers(min_value=1, max_value=4))
    def poll(self, max_tasks: int) -> None:
        for item in self.harness.poll(self.task_type, max_tasks):
            if item.run_id in self.runs:
                self.take(item)
            else:
                self.settle_leftover(item)

    def settle_leftover(self, item: PolledItem) -> None:
        expect(
            self.harness.enqueued_by_this_run(item.run_id),
            f"a poll of {self.task_type} got {item.task_id}, never enqueued on that type",
        )
        self.harness.complete(item)

    def take(self, item: PolledItem) -> None:
        task_id, attempt, lease_id = item.task_id, item.attempt, item.lease_id
        expect(task_id == f"{item.run_id}.{STEP_ID}", f"{task_id} is not <run_id>.<step_id>")
        expect(item.value.get("step_id") == STEP_ID, f"{task_id} came with another step_id")
        expect(
            bool(lease_id) and lease_id not in self.lease_ids,
            f"{task_id}: lease_id missing or reused",
        )
        expect(task_id not in self.finished, f"{task_id} was handed out after it was settled")
        previous = self.latest(task_id)
        if previous is not None and task_id not in self.continued:
            expect(
                attempt > previous.attempt,
                f"{task_id} was handed out again as attempt {attempt} after {previous.attempt}",
            )
        checkpoint = item.value.get("checkpoint")
        expect(
            checkpoint == self.checkpoints.get(task_id),
            f"{task_id} came with checkpoint {checkpoint!r}, "
            f"not the saved {self.checkpoints.get(task_id)!r}",
        )
        self.expect_started_before_hand_out(item.run_id, attempt)
        if previous is not None and previous.settled_by is None:
            previous.settled_by = "superseded"
        self.lease_ids.add(lease_id)
        self.handed_out[(item.run_id, attempt)] += 1
        self.held.append(Held(item, attempt))

    def expect_started_before_hand_out(self, run_id: str, attempt: int) -> None:
        started = [
            e
            for e in self.harness.target.history(run_id)
            if e.type == STEP_STARTED and e.attempt_number == attempt
        ]
        expect(
            bool(started),
            f"{run_id}.{STEP_ID} was handed out as attempt {attempt} with no step.started "
            "of that attempt in the history",
        )

    @rule(pick=PICK, action=st.sampled_from(TERMINAL_ACTIONS))
    def finish(self, pick: int, action: str) -> None:
        held = picked(self.current(), pick)
        if held is None:
            return
        body: dict[str, Any] = {"action": action, "lease_id": held.item.lease_id}
        if action == "fail":
            body |= FAIL_BODY
        else:
            body["output"] = {"held": len(self.held)}

        answer = self.harness.resolve(held.item.task_id, body)

        self.expect_applied(answer, held, action)
        held.settled_by, held.settling_body = action, body
        event = EVENT_OF_ACTION[action]
        self.settled[(held.item.run_id, event, None if action == "continue" else held.attempt)] += 1
        (self.continued if action == "continue" else self.finished).add(held.item.task_id)

    @rule(
        pick=PICK,
        with_checkpoint=st.booleans(),
        name=st.sampled_from([None, "resume"]),
        duration_ms=st.sampled_from(PAUSE_MS),
    )
    def pause(self, pick: int, with_checkpoint: bool, name: str | None, duration_ms: int) -> None:
        held = picked(self.current(), pick)
        if held is None:
            return
        body: dict[str, Any] = {
            "action": "pause",
            "lease_id": held.item.lease_id,
            "duration_ms": duration_ms,
        }
        checkpoint = {"at": len(self.held)}
        if with_checkpoint:
            body["checkpoint"] = checkpoint
        if name is not None:
            body["name"] = name

        answer = self.harness.resolve(held.item.task_id, body)

        self.expect_applied(answer, held, "pause")
        held.settled_by = "pause"
        if with_checkpoint:
            self.checkpoints[held.item.task_id] = checkpoint
        elif name is not None:
            self.checkpoints[held.item.task_id] = {"pause_resume": name}

    @rule(pick=PICK, action=st.sampled_from(["heartbeat", "checkpoint", "stream", "signal"]))
    def extend(self, pick: int, action: str) -> None:
        held = picked(self.current(), pick)
        if held is None:
            return
        task_id, lease_id = held.item.task_id, held.item.lease_id
        value = {"n": len(self.held)}

        if action == "signal":
            sent = self.harness.resolve(
                task_id,
                {
                    "action": "send_signal",
                    "lease_id": lease_id,
                    "run_id": held.item.run_id,
                    "name": "s",
                    "data": value,
                },
            )
            self.expect_applied(sent, held, "send_signal")
            body = {"action": "wait_signal", "lease_id": lease_id, "name": "s"}
            answer = self.harness.resolve(task_id, body | {"timeout_ms": WAIT_SIGNAL_MS})
            self.expect_applied(answer, held, "wait_signal")
            expect(
                _json_or_none(answer.body) == value,
                f"wait_signal on {task_id} answered {answer.describe()}, not the signal {value}",
            )
            return
        answer = self.harness.resolve(
            task_id, {"action": action, "lease_id": lease_id, "data": value}
        )
        self.expect_applied(answer, held, action)
        if action == "checkpoint":
            self.checkpoints[task_id] = value

    def expect_applied(self, answer: Answer, held: Held, action: str) -> None:
        doing = f"{action} of {held.item.task_id} attempt {held.attempt} with its current lease"
        expect_status(answer, 200, doing)
        expect_not_replayed(answer, doing)

    @rule(
        pick=PICK,
        action=st.sampled_from(["complete", "fail", "continue", "pause", "heartbeat"]),
    )
    def resolve_with_an_old_lease(self, pick: int, action: str) -> None:
        """A lease that a resolve or a newer hand-out ended is fenced out: 409 (or 404), or
        a replay of the very action that ended it while no newer hand-out exists; the
        history does not change."""
        held = picked([h for h in self.held if h.settled_by is not None], pick)
        if held is None:
            return
        body: dict[str, Any] = {"action": action, "lease_id": held.item.lease_id}
        body |= FAIL_BODY if action == "fail" else {"duration_ms": 1}

        answer = self.harness.resolve(held.item.task_id, body)

        if answer.status == 200:  # noqa: PLR2004 - HTTP OK
            handed_out_since = self.latest(held.item.task_id) is not held
            expect(
                action == held.settled_by and not handed_out_since,
                f"{action} of {held.item.task_id} with a lease that {held.settled_by} ended"
                f"{', and handed out again since,' if handed_out_since else ''} "
                f"was applied: {answer.describe()}",
            )
            expect(
                action not in TERMINAL_ACTIONS or answer.headers.get(REPLAYED_HEADER) == "true",
                f"a repeated {action} of {held.item.task_id} lacks {REPLAYED_HEADER}: true",
            )
        else:
            expect_status(
                answer, FENCED_OUT, f"{action} with the stale lease of {held.item.task_id}"
            )

    @rule(pick=PICK)
    def replay_a_terminal_resolve(self, pick: int) -> None:
        held = picked(self.settled_terminally(), pick)
        if held is None:
            return
        answer = self.harness.resolve(held.item.task_id, held.settling_body)

        doing = f"repeating the {held.settled_by} of {held.item.task_id}"
        expect_status(answer, 200, doing)
        expect(
            answer.headers.get(REPLAYED_HEADER) == "true",
            f"{doing}: the answer lacks {REPLAYED_HEADER}: true",
        )

    @rule(pick=PICK, action=st.sampled_from(TERMINAL_ACTIONS))
    def settle_differently(self, pick: int, action: str) -> None:
        held = picked([h for h in self.settled_terminally() if h.settled_by != action], pick)
        if held is None:
            return
        body: dict[str, Any] = {"action": action, "lease_id": held.item.lease_id}
        body |= FAIL_BODY if action == "fail" else {}

        answer = self.harness.resolve(held.item.task_id, body)

        expect_status(answer, 409, f"{action} of {held.item.task_id} after its {held.settled_by}")

    @invariant()
    def histories_agree_with_the_model(self) -> None:
        for run_id in self.runs:
            self.check_history(run_id, self.harness.target.history(run_id))

    def check_history(self, run_id: str, events: list[HistoryEvent]) -> None:
        for event in events:
            expect(event.run_id == run_id, f"history.{run_id} holds an event of {event.run_id}")
            if event.type.startswith("step."):
                expect(event.step_id == STEP_ID, f"{event.type} of {run_id} has another step")
            check_msg_id(run_id, event)
        terminal = Counter(
            (run_id, e.type, None if e.type == "step.continue" else e.attempt_number)
            for e in events
            if e.type in EVENT_OF_ACTION.values()
        )
        wanted = Counter({key: n for key, n in self.settled.items() if key[0] == run_id})
        expect(
            terminal == wanted,
            f"run {run_id}: the history's terminal events {_listed(terminal)} are not "
            f"the {_listed(wanted)} of the resolves that took effect",
        )
        self.check_started(run_id, events)

    def check_started(self, run_id: str, events: list[HistoryEvent]) -> None:
        """One step.started per hand-out; an iteration re-published by an engine keeps its
        attempt, so its step.started repeats a msg-id that JetStream may drop."""
        started = Counter(e.attempt_number for e in events if e.type == STEP_STARTED)
        for attempt, count in started.items():
            handed = self.handed_out[(run_id, attempt or 0)]
            expect(
                handed > 0,
                f"run {run_id} has a step.started of attempt {attempt} that was never handed out",
            )
            if f"{run_id}.{STEP_ID}" not in self.continued:
                expect(count == 1, f"run {run_id} has {count} step.started of attempt {attempt}")

    def teardown(self) -> None:
        """Every enqueued task must be handed out: poll for those that were not yet. Then,
        whatever happened, complete what is held and what is still to come back (paused),
        so that nothing waits on a lease for minutes or turns up in a later example.

        When the example is already failing, the failure to report is the one under way
        (`sys.exc_info` sees it here, in Hypothesis' `finally`): only the clean-up is done.
        """
        failure = sys.exc_info()[1]
        if isinstance(failure, ViolationError):
            self.harness.violations.append(failure)
        try:
            if failure is None:
                self.take_the_rest()
        finally:
            for held in self.current():
                self.harness.complete(held.item)
            self.settle_what_comes_back(strict=failure is None)

    def take_the_rest(self) -> None:
        deadline = time.monotonic() + TAKE_WITHIN_S
        while waiting := self.never_handed_out():
            expect(
                time.monotonic() < deadline,
                f"the tasks of {', '.join(waiting)} were enqueued but not handed out within "
                f"{TAKE_WITHIN_S:g} s",
            )
            self.poll(max_tasks=4)

    def settle_what_comes_back(self, *, strict: bool) -> None:
        """Poll until every paused task came back and a poll finds nothing, completing each
        task; `strict`: a paused task that never comes back is a violation."""
        awaited = {
            h.item.task_id
            for h in self.held
            if h.settled_by == "pause" and self.latest(h.item.task_id) is h
        }
        deadline = time.monotonic() + TAKE_WITHIN_S
        while time.monotonic() < deadline:
            items = self.harness.poll(self.task_type, max_tasks=4)
            for item in items:
                awaited.discard(item.task_id)
                self.harness.complete(item)
            if not items and not awaited:
                return
        expect(
            not strict,
            f"{', '.join(sorted(awaited))} paused for at most {max(PAUSE_MS)} ms, but not "
            f"handed out again within {TAKE_WITHIN_S:g} s",
        )

    def never_handed_out(self) -> list[str]:
        handed = {run_id for run_id, _ in self.handed_out}
        return [run_id for run_id in self.runs if run_id not in handed]


def picked(candidates: list[Held], pick: int) -> Held | None:
    return candidates[pick % len(candidates)] if candidates else None


def check_msg_id(run_id: str, event: HistoryEvent) -> None:
    """PROTOCOL.md 1.4: `<run>.<step>.<type>.<attempt>`; `<run>.<step>.continue.…` for
    step.continue. Known only when the history is read from NATS."""
    if event.msg_id is None or not event.type.startswith("step."):
        return
    base = f"{run_id}.{STEP_ID}"
    if event.type in ATTEMPTED_EVENTS:
        wanted = f"{base}.{event.type}.{event.attempt_number}"
        expect(event.msg_id == wanted, f"{event.type} has msg-id {event.msg_id}, not {wanted}")
    elif event.type == "step.continue":
        expect(
            event.msg_id.startswith(f"{base}.continue."),
            f"step.continue has msg-id {event.msg_id}, not {base}.continue.<nonce>",
        )


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _listed(counts: Counter[tuple[str, str, int | None]]) -> str:
    parts = [
        f"{kind}" + (f" (attempt {attempt})" if attempt is not None else "") + f" x{n}"
        for (_, kind, attempt), n in sorted(counts.items(), key=str)
    ]
    return "[" + ", ".join(parts) + "]" if parts else "[none]"
