"""Properties that stand alone: bad input, unknown tasks, raw JSON passing through."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from hypothesis import given
from hypothesis import strategies as st

from conformance.client import Answer, quoted
from conformance.harness import Harness
from conformance.spec import (
    EVENT_OF_ACTION,
    expect,
    expect_not_replayed,
    expect_problem,
    expect_status,
)
from domain.protocol import RESOLVE_ACTIONS

TASK_TYPE_CHARS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-"
)
MAX_TASK_TYPE_BYTES: Final = 128
NOT_INTEGERS: Final = st.one_of(
    st.text(max_size=5),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
"""JSON values that no decoder reads as an integer (booleans left out: some languages do)."""
NOT_JSON: Final = st.sampled_from([b"", b"{", b"nope", b'{"task_types":', b"{'a': 1}", b"\xff"])

BadCase = tuple[bytes, str | None]
"""A request body and the field its problem must name (None: a body that is not JSON)."""


def _body(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def bad_task_types() -> st.SearchStrategy[str]:
    def illegal(char: str) -> bool:
        return char not in TASK_TYPE_CHARS

    return st.one_of(
        st.just(""),
        st.text(alphabet=sorted(TASK_TYPE_CHARS - {"."}), min_size=1, max_size=8).flatmap(
            lambda word: st.sampled_from([f".{word}", f"{word}.", f"{word}..{word}"])
        ),
        st.builds(
            lambda head, char, tail: head + char + tail,
            st.text(alphabet="abc", max_size=3),
            st.characters(codec="utf-8").filter(illegal),
            st.text(alphabet="abc", max_size=3),
        ),
        st.integers(min_value=MAX_TASK_TYPE_BYTES + 1, max_value=300).map(lambda n: "a" * n),
    )


def bad_polls(ok_type: str) -> st.SearchStrategy[BadCase]:
    good = {"task_types": [ok_type], "timeout_ms": 1}
    return st.one_of(
        st.just((_body({"task_types": []}), "task_types")),
        st.just((_body({}), "task_types")),
        bad_task_types().map(lambda t: (_body({"task_types": [ok_type, t]}), "task_types")),
        st.sampled_from(["max_tasks", "timeout_ms"]).flatmap(
            lambda field: NOT_INTEGERS.map(lambda v: (_body(good | {field: v}), field))
        ),
        NOT_INTEGERS.map(lambda v: (_body({"task_types": v}), "task_types")),
        NOT_JSON.map(lambda raw: (raw, None)),
    )


def bad_resolves(run_id: str) -> st.SearchStrategy[BadCase]:
    return st.one_of(
        st.just((_body({}), "action")),
        st.text(max_size=8)
        .filter(lambda a: a not in RESOLVE_ACTIONS)
        .map(lambda a: (_body({"action": a} if a else {}), "action")),
        st.text(alphabet="xyz", min_size=1, max_size=6).map(
            lambda t: (_body({"action": "fail", "error": "e", "failure_type": t}), "failure_type")
        ),
        st.just(
            (
                _body({"action": "fail", "error": "e", "failure_type": "retry_after"}),
                "retry_after_ms",
            )
        ),
        st.one_of(
            st.integers(min_value=-(2**62), max_value=0),
            st.integers(min_value=3_600_001, max_value=2**62),
        ).map(lambda ms: (_body({"action": "pause", "duration_ms": ms}), "duration_ms")),
        NOT_INTEGERS.map(lambda v: (_body({"action": "pause", "duration_ms": v}), "duration_ms")),
        st.just((_body({"action": "wait_signal", "timeout_ms": 10}), "name")),
        st.just((_body({"action": "send_signal", "name": "s", "data": 1}), "run_id")),
        st.just((_body({"action": "send_signal", "run_id": run_id, "data": 1}), "name")),
        NOT_JSON.map(lambda raw: (raw, None)),
    )


def _containers_of(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Arrays and objects of `inner`; keys with the characters JSON must escape."""
    return st.lists(inner, max_size=3) | st.dictionaries(
        st.text(alphabet='abcé"\\', max_size=4), inner, max_size=3
    )


def json_texts() -> st.SearchStrategy[bytes]:
    """JSON texts as a client might write them: spaced, indented, escaped or not."""
    scalars = st.one_of(
        st.booleans(),
        st.integers(min_value=-(10**15), max_value=10**15),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=6),
    )
    values = st.recursive(st.none() | scalars, _containers_of, max_leaves=6).filter(
        lambda value: value is not None
    )
    return st.builds(
        lambda value, indent, separators, ascii_only: json.dumps(
            value, indent=indent, separators=separators, ensure_ascii=ascii_only
        ).encode(),
        values,
        st.sampled_from([None, 1]),
        st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]),
        st.booleans(),
    )


def bad_input_is_400_naming_the_field(harness: Harness) -> Callable[..., None]:
    ok_type = harness.task_type("bad-input")

    @given(polls=st.lists(bad_polls(ok_type), min_size=1, max_size=4), data=st.data())
    def bad_input(polls: list[BadCase], data: st.DataObject) -> None:
        for body, field in polls:
            answer = harness.client.post("/v1/tasks/poll", body)
            expect_problem(answer, field, f"poll with body {body[:200]!r}")
        with harness.taking(ok_type) as item:
            resolves = data.draw(st.lists(bad_resolves(item.run_id), min_size=1, max_size=4))
            for body, field in resolves:
                answer = harness.resolve_raw(item.task_id, body)
                expect_problem(answer, field, f"resolve of a held task with body {body[:200]!r}")
            done = harness.resolve(item.task_id, {"action": "complete", "lease_id": item.lease_id})
            doing = "complete after bad resolves (which must leave the lease alone)"
            expect_status(done, 200, doing)
            expect_not_replayed(done, doing)
            terminal_events = set(EVENT_OF_ACTION.values())
            settled = [
                e.type for e in harness.target.history(item.run_id) if e.type in terminal_events
            ]
            expect(
                settled == ["step.completed"],
                f"after bad resolves and one complete, the history's terminal events are {settled}",
            )

    return bad_input


def unknown_tasks_are_404(harness: Harness) -> Callable[..., None]:
    @given(
        action=st.sampled_from(sorted(RESOLVE_ACTIONS)),
        step=st.text(alphabet="abc-_", min_size=1, max_size=6),
    )
    def unknown_task(action: str, step: str) -> None:
        task_id = f"{harness.new_run_id()}.{step}"
        answer = harness.resolve(task_id, {"action": action, "lease_id": "nobody-leased-this"})
        expect_status(answer, 404, f"{action} of {task_id}, which was never enqueued")

    return unknown_task


def raw_json_passes_byte_exact(harness: Harness) -> Callable[..., None]:
    """Input, checkpoint, signal and output values reach the other side as the bytes sent."""
    task_type = harness.task_type("raw-json")

    @given(
        raw_input=json_texts(), checkpoint=json_texts(), signal=json_texts(), output=json_texts()
    )
    def raw_json(raw_input: bytes, checkpoint: bytes, signal: bytes, output: bytes) -> None:
        with harness.taking(task_type, raw_input) as item:
            _same(item.raw.get("input", "").encode(), raw_input, "the poll answer's input")
            resolve = _resolver(harness, item.task_id, item.lease_id)
            expect_status(resolve(b'"action":"checkpoint","data":' + checkpoint), 200, "checkpoint")
            saved = harness.client.get(f"/v1/tasks/{quoted(item.task_id)}/checkpoint")
            expect_status(saved, 200, "GET the checkpoint just saved")
            _same(saved.body, checkpoint, "the saved checkpoint")
            run = json.dumps(item.run_id).encode()
            sent = resolve(
                b'"action":"send_signal","name":"s","run_id":' + run + b',"data":' + signal
            )
            expect_status(sent, 200, "send_signal")
            waited = resolve(b'"action":"wait_signal","name":"s","timeout_ms":2000')
            expect_status(waited, 200, "wait_signal for a signal already sent")
            _same(waited.body, signal, "the signal wait_signal answered")
            expect_status(resolve(b'"action":"complete","output":' + output), 200, "complete")
            completed = [
                e for e in harness.target.history(item.run_id) if e.type == "step.completed"
            ]
            expect(
                len(completed) == 1, f"{len(completed)} step.completed events after one complete"
            )
            _same((completed[0].payload or "").encode(), output, "the step.completed payload")

    return raw_json


def _resolver(harness: Harness, task_id: str, lease_id: str) -> Callable[[bytes], Answer]:
    """A resolve of the task with its lease, the other fields given as raw JSON members."""
    lease = json.dumps(lease_id).encode()

    def resolve(fields: bytes) -> Answer:
        return harness.resolve_raw(task_id, b'{"lease_id":' + lease + b"," + fields + b"}")

    return resolve


def _same(got: bytes, sent: bytes, what: str) -> None:
    expect(got == sent, f"{what} is {got[:300]!r}, not the bytes sent: {sent[:300]!r}")
