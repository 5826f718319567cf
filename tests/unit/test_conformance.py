"""The conformance runner's own parts: raw JSON spans, wire bodies, checks, the report."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Collection, Sequence
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.cli import main
from conformance.client import Answer, Client, raw_elements, raw_members
from conformance.harness import Harness, PolledItem
from conformance.machine import ProtocolMachine, check_msg_id
from conformance.properties import json_texts
from conformance.runner import Outcome, _check, _report, hypothesis_settings
from conformance.spec import ViolationError
from conformance.targets import (
    HistoryEvent,
    NewTask,
    SimTarget,
    parse_event,
    sim_task_body,
    task_payload,
)
from domain.redaction import without_userinfo

SPACES = st.sampled_from(["", " ", "\n  ", "\t"])


@given(texts=st.lists(json_texts(), max_size=4), space=SPACES)
def test_raw_elements_are_the_texts_as_written(texts: list[bytes], space: str) -> None:
    decoded = [text.decode() for text in texts]

    elements = raw_elements(f"{space}[{space}" + f"{space},{space}".join(decoded) + f"{space}]")

    assert elements == decoded


@given(members=st.dictionaries(st.text(max_size=4), json_texts(), max_size=4), space=SPACES)
def test_raw_members_are_the_values_as_written(members: dict[str, bytes], space: str) -> None:
    pairs = [
        f"{json.dumps(name)}{space}:{space}{value.decode()}" for name, value in members.items()
    ]

    found = raw_members("{" + f",{space}".join(pairs) + "}")

    assert found == {name: value.decode() for name, value in members.items()}


@pytest.mark.parametrize("text", ["", "[1,", "[1 2]", "{}", "1", "[1,]", "[] trailing", "[1]]"])
def test_raw_elements_reject_what_is_not_an_array(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - json's and ours, both ValueError
        raw_elements(text)


@pytest.mark.parametrize("text", ["", "[]", '{"a":1,}', '{"a":1} x', '{"a" 1}', '{,"a":1}'])
def test_raw_members_reject_what_is_not_an_object(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - json's and ours, both ValueError
        raw_members(text)


def test_task_bodies_carry_the_input_byte_for_byte() -> None:
    task = NewTask(task_type="t", run_id="r1", raw_input=b'{ "a" : 1e2 }')

    assert task_payload(task) == (
        b'{"task_id":"r1.step-1","run_id":"r1","step_id":"step-1","input":{ "a" : 1e2 }}'
    )
    assert sim_task_body(task) == (
        b'{"task_type":"t","run_id":"r1","step_id":"step-1","input":{ "a" : 1e2 }}'
    )


def test_an_event_keeps_its_raw_payload() -> None:
    raw = (
        '{"type":"step.completed","run_id":"r","step_id":"s",'
        '"payload":{ "x" : 1 },"attempt_number":2}'
    )

    event = parse_event(raw, "r.s.step.completed.2")

    assert (event.type, event.attempt_number, event.payload) == ("step.completed", 2, '{ "x" : 1 }')


@pytest.mark.parametrize(
    "raw", ["[]", '{"run_id":"r"}', '{"type":"step.started","run_id":"r","attempt_number":"1"}']
)
def test_a_malformed_event_is_a_violation(raw: str) -> None:
    with pytest.raises(ViolationError):
        parse_event(raw)


def event(kind: str, msg_id: str, attempt: int | None = 1) -> HistoryEvent:
    return HistoryEvent(
        raw="",
        type=kind,
        run_id="r",
        step_id="step-1",
        attempt_number=attempt,
        payload=None,
        msg_id=msg_id,
    )


def test_msg_ids_follow_the_protocol() -> None:
    check_msg_id("r", event("step.started", "r.step-1.step.started.1"))
    check_msg_id("r", event("step.continue", "r.step-1.continue.0.lease", attempt=None))

    with pytest.raises(ViolationError, match=r"not r\.step-1\.step\.completed\.1"):
        check_msg_id("r", event("step.completed", "r.step-1.step.completed"))


def test_urls_lose_their_credentials_in_messages() -> None:
    assert without_userinfo("nats://u:secret@a:4222, nats://b:4222") == (
        "nats://***@a:4222,nats://b:4222"
    )
    assert without_userinfo("https://token@bridge:8443/x") == "https://***@bridge:8443/x"


def test_a_failing_property_reports_its_shrunk_counterexample() -> None:
    @settings(hypothesis_settings(50))
    @given(n=st.integers())
    def small(n: int) -> None:
        if n > 10:
            raise ViolationError(f"{n} is too big")

    client = Client(url="http://127.0.0.1:1")

    outcome = _check("small", small, Harness(client=client, target=SimTarget(client)))
    out = io.StringIO()
    _report(outcome, "numbers stay small", out)

    assert not outcome.passed
    assert outcome.error == "ViolationError: 11 is too big"
    assert "Failing test case: small(" in "\n".join(outcome.counterexample)
    assert out.getvalue().startswith("FAIL  small: numbers stay small (")


def test_a_passing_property_is_one_line() -> None:
    out = io.StringIO()

    _report(Outcome(name="p", seconds=1.25), "it holds", out)

    assert out.getvalue() == "PASS  p: it holds (1.2 s)\n"


def test_the_command_needs_at_least_one_example(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["conformance", "--url", "http://127.0.0.1:1", "--examples", "0"])

    assert status == 2
    assert (
        capsys.readouterr().err
        == "dagnats-bridge: invalid setting: --examples must be at least 1\n"
    )


def test_an_unreachable_bridge_is_one_line_and_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["conformance", "--url", "http://127.0.0.1:1", "--token", "s3cret"])

    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("dagnats-bridge: POST /v1/sim/clock/advance on http://127.0.0.1:1: ")
    assert len(err.splitlines()) == 1
    assert "s3cret" not in err


def test_the_cli_imports_the_spec_only_to_run_it() -> None:
    """`serve` does not pay for Hypothesis."""
    code = (
        "import sys, app.cli; "
        "print([m for m in ('hypothesis', 'conformance.runner') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout == "[]\n"


@attrs.define
class RecordingTarget:
    """Every hand-out has its step.started; enqueues are only recorded."""

    description: str = "recorded"
    enqueued: list[NewTask] = attrs.field(factory=list)

    def enqueue(self, task: NewTask) -> None:
        self.enqueued.append(task)

    def history(self, run_id: str) -> list[HistoryEvent]:
        return [
            HistoryEvent(
                raw="",
                type="step.started",
                run_id=run_id,
                step_id="step-1",
                attempt_number=attempt,
                payload=None,
            )
            for attempt in (1, 2, 3)
        ]

    def close(self, task_types: Collection[str]) -> None:
        """Nothing to release."""


class ScriptedHarness(Harness):
    """Polls answer from a script (an exception in it is raised), every resolve answers
    `status`; records the lease of each task it completes."""

    def __init__(self, polls: Sequence[list[PolledItem] | Exception] = (), status: int = 200):
        client = Client(url="http://127.0.0.1:1")
        super().__init__(client=client, target=RecordingTarget(), prefix="conformance-test")
        self.polls = list(polls)
        self.status = status
        self.completed: list[str] = []

    def poll(self, task_type: str, max_tasks: int = 1) -> list[PolledItem]:
        answer = self.polls.pop(0) if self.polls else []
        if isinstance(answer, Exception):
            raise answer
        return answer

    def resolve(self, task_id: str, body: dict[str, Any]) -> Answer:
        return Answer(self.status, {}, b"")

    def complete(self, item: PolledItem) -> None:
        self.completed.append(item.lease_id)


def handed_out(run_id: str, lease_id: str, attempt: int = 1) -> PolledItem:
    value = {
        "task_id": f"{run_id}.step-1",
        "run_id": run_id,
        "step_id": "step-1",
        "attempt": attempt,
        "lease_id": lease_id,
    }
    return PolledItem(value=value, raw={})


def test_every_example_of_the_machine_shares_one_task_type() -> None:
    harness = ScriptedHarness()

    first, second = ProtocolMachine(harness), ProtocolMachine(harness)

    assert first.task_type == second.task_type
    assert harness.task_types == {first.task_type}


def test_a_pause_applied_with_the_lease_of_an_earlier_delivery_is_a_violation() -> None:
    harness = ScriptedHarness()
    machine = ProtocolMachine(harness)
    machine.enqueue()
    run_id = machine.runs[0]
    machine.take(handed_out(run_id, "lease-1"))
    machine.pause(pick=0, with_checkpoint=False, name=None, duration_ms=1)
    machine.resolve_with_an_old_lease(pick=0, action="pause")  # a replay: not yet redelivered
    machine.take(handed_out(run_id, "lease-2", attempt=2))

    with pytest.raises(ViolationError, match="handed out again since"):
        machine.resolve_with_an_old_lease(pick=0, action="pause")


def test_a_leftover_of_an_earlier_example_is_completed_and_left_out_of_the_model() -> None:
    leftover = handed_out("conformance-test-0ld-r0", "old")
    harness = ScriptedHarness(polls=[[leftover, handed_out("conformance-test-x-r9", "x")]])
    machine = ProtocolMachine(harness)
    machine.enqueue()
    harness.polls.insert(0, [leftover, handed_out(machine.runs[0], "new")])

    machine.poll(max_tasks=2)

    assert harness.completed == ["old"]
    assert [h.item.lease_id for h in machine.held] == ["new"]
    assert machine.handed_out == {(machine.runs[0], 1): 1}


def test_a_task_of_no_run_of_the_spec_is_a_violation() -> None:
    harness = ScriptedHarness(polls=[[handed_out("someone-else-r0", "l")]])
    machine = ProtocolMachine(harness)

    with pytest.raises(ViolationError, match="never enqueued on that type"):
        machine.poll(max_tasks=1)


def test_teardown_completes_the_held_tasks_when_taking_the_rest_fails() -> None:
    harness = ScriptedHarness()
    machine = ProtocolMachine(harness)
    machine.enqueue()
    machine.enqueue()
    machine.take(handed_out(machine.runs[0], "held"))
    harness.polls = [ViolationError("a poll answer is not an array of objects")]

    with pytest.raises(ViolationError, match="not an array"):
        machine.teardown()

    assert harness.completed == ["held"]


def test_teardown_waits_for_a_paused_task_and_completes_it() -> None:
    harness = ScriptedHarness()
    machine = ProtocolMachine(harness)
    machine.enqueue()
    machine.take(handed_out(machine.runs[0], "paused"))
    machine.pause(pick=0, with_checkpoint=False, name=None, duration_ms=1)
    back = handed_out(machine.runs[0], "back", attempt=2)
    harness.polls = [[], [], [back], []]

    machine.teardown()

    assert harness.completed == ["back"]
    assert harness.polls == []
