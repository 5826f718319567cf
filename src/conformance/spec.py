"""What the spec asserts, in words a bridge author can act on."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from conformance.client import PROBLEM_JSON, Answer

STEP_ID: Final = "step-1"
TERMINAL_ACTIONS: Final = ("complete", "fail", "continue")
EVENT_OF_ACTION: Final = {
    "complete": "step.completed",
    "fail": "step.failed",
    "continue": "step.continue",
}
REPLAYED_HEADER: Final = "x-dagnats-replayed"
FENCED_OUT: Final = frozenset({404, 409})
"""A resolve with a lease that is no longer current: 409, or 404 once the bridge forgot it."""


class ViolationError(AssertionError):
    """The bridge broke the protocol; the message says how."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ViolationError(message)


def expect_status(answer: Answer, wanted: int | Iterable[int], doing: str) -> None:
    allowed = {wanted} if isinstance(wanted, int) else set(wanted)
    expect(
        answer.status in allowed,
        f"{doing}: wanted HTTP {' or '.join(map(str, sorted(allowed)))}, got {answer.describe()}",
    )


def expect_not_replayed(answer: Answer, doing: str) -> None:
    expect(
        answer.headers.get(REPLAYED_HEADER) != "true",
        f"{doing}: a first resolve was marked {REPLAYED_HEADER}: true",
    )


def expect_problem(answer: Answer, field: str | None, doing: str) -> None:
    """400 as application/problem+json, naming `field` when there is one to name."""
    expect_status(answer, 400, doing)
    kind = answer.headers.get("content-type", "").split(";")[0].strip()
    expect(kind == PROBLEM_JSON, f"{doing}: the 400 is {kind or 'untyped'}, not {PROBLEM_JSON}")
    try:
        problem = answer.json()
    except ValueError:
        problem = None
    expect(isinstance(problem, dict), f"{doing}: the 400 body is not a JSON object")
    if field is not None and isinstance(problem, dict):
        expect(
            problem.get("field") == field,
            f"{doing}: the problem names field {problem.get('field')!r}, not {field!r}: "
            f"{answer.describe()}",
        )
