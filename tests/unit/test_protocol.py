"""The DagNats protocol rules in domain/protocol.py (PROTOCOL.md 1.3, 1.4, 2.4, 2.5; DESIGN.md).

Expected values are written from the spec, never computed with the code under test.
"""

from __future__ import annotations

import json
import re
import string
from datetime import timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from domain.errors import InvalidRequestError
from domain.models import FailureType, RunId, StepId
from domain.protocol import (
    STEP_COMPLETED,
    STEP_CONTINUE,
    STEP_FAILED,
    STEP_STARTED,
    attempt_of,
    clamp_max_tasks,
    clamp_retry_after_ms,
    continue_msg_id,
    event_msg_id,
    is_valid_attempt,
    parse_failure_type,
    pause_marker,
    poll_room,
    poll_timeout,
    require_duration_ms,
    validate_id_token,
    validate_poll_id,
    validate_task_type,
    validate_task_types,
)

TOKEN_CHARS = string.ascii_letters + string.digits + "_-"
TASK_TYPE_CHARS = TOKEN_CHARS + "."
# The spec's task type, written independently of the validator: 1..128 bytes of
# [A-Za-z0-9_-] tokens joined by single dots (PROTOCOL.md 2.5).
TASK_TYPE_SPEC = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")

tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12)
valid_task_types = (
    st.lists(tokens, min_size=1, max_size=10).map(".".join).filter(lambda t: len(t) <= 128)
)
# Task types arrive as JSON strings, which cannot hold lone surrogates: UTF-8 characters only.
illegal_chars = st.characters(codec="utf-8").filter(lambda c: c not in TASK_TYPE_CHARS)
event_types = st.sampled_from([STEP_STARTED, STEP_COMPLETED, STEP_FAILED, STEP_CONTINUE])


def _is_spec_task_type(text: str) -> bool:
    return TASK_TYPE_SPEC.fullmatch(text) is not None and len(text.encode()) <= 128


# --- validate_task_type / validate_task_types ----------------------------------------------


@pytest.mark.parametrize(
    ("task_type", "message_part"),
    [
        ("", "task_types entries must not be empty"),
        ("a" * 129, "task type exceeds 128 bytes"),
        ("é" * 65, "task type exceeds 128 bytes"),
        ("." + "a" * 128, "task type exceeds 128 bytes"),
        (".a", "must not start or end with '.'"),
        ("a.", "must not start or end with '.'"),
        (".a..b", "must not start or end with '.'"),
        ("a..b", "empty subject token"),
        ("a..b c", "empty subject token"),
        ("has space", "illegal character"),
        ("wild*card", "illegal character"),
        ("greedy>", "illegal character"),
        ("é" * 64, "illegal character"),
    ],
    ids=[
        "empty",
        "129-bytes",
        "130-bytes-of-65-chars",
        "length-before-dot",
        "leading-dot",
        "trailing-dot",
        "dot-before-double-dot",
        "double-dot",
        "double-dot-before-illegal-char",
        "space",
        "star",
        "greater-than",
        "128-bytes-non-ascii",
    ],
)
def test_validate_task_type_applies_the_go_rules_in_their_order(
    task_type: str, message_part: str
) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        validate_task_type(task_type)

    assert message_part in str(raised.value)
    assert raised.value.field == "task_types"


@pytest.mark.parametrize(
    ("task_type", "detail"),
    [
        (".a", "invalid task type \".a\": must not start or end with '.'"),
        ("a.", "invalid task type \"a.\": must not start or end with '.'"),
        ("a..b", 'invalid task type "a..b": empty subject token'),
        ("has space", 'invalid task type "has space": illegal character " "'),
        ("wild*card", 'invalid task type "wild*card": illegal character "*"'),
        ("greedy>", 'invalid task type "greedy>": illegal character ">"'),
    ],
)
def test_validate_task_type_keeps_the_go_detail_text_with_double_quotes(
    task_type: str, detail: str
) -> None:
    # DESIGN.md Decision 1 and PROTOCOL.md 2.4: clients match on Go's %q-quoted text.
    with pytest.raises(InvalidRequestError) as raised:
        validate_task_type(task_type)

    assert str(raised.value) == detail


def test_validate_task_type_accepts_exactly_128_bytes() -> None:
    task_type = "a" * 128

    result = validate_task_type(task_type)

    assert result == task_type


@given(valid_task_types)
def test_validate_task_type_returns_every_dotted_token_type_unchanged(task_type: str) -> None:
    result = validate_task_type(task_type)

    assert result == task_type


@given(st.text(), illegal_chars, st.text())
def test_validate_task_type_rejects_any_character_outside_the_alphabet(
    prefix: str, illegal: str, suffix: str
) -> None:
    task_type = prefix + illegal + suffix

    with pytest.raises(InvalidRequestError) as raised:
        validate_task_type(task_type)

    assert raised.value.field == "task_types"


@given(st.text() | st.text(alphabet=TASK_TYPE_CHARS, max_size=140))
def test_validate_task_type_accepts_spec_types_and_rejects_others_only_with_invalid_request(
    text: str,
) -> None:
    if _is_spec_task_type(text):
        assert validate_task_type(text) == text
    else:
        with pytest.raises(InvalidRequestError) as raised:
            validate_task_type(text)
        assert raised.value.field == "task_types"


def test_validate_task_types_requires_a_non_empty_list() -> None:
    with pytest.raises(InvalidRequestError) as raised:
        validate_task_types([])

    assert str(raised.value) == "task_types is required"
    assert raised.value.field == "task_types"


def test_validate_task_types_reports_the_first_invalid_entry() -> None:
    with pytest.raises(InvalidRequestError) as raised:
        validate_task_types(["ok", "", "has space"])

    assert str(raised.value) == "task_types entries must not be empty"
    assert raised.value.field == "task_types"


@given(st.lists(valid_task_types, min_size=1, max_size=5, unique=True))
def test_validate_task_types_returns_distinct_valid_types_in_request_order(
    task_types: list[str],
) -> None:
    result = validate_task_types(task_types)

    assert result == task_types


# --- poll limits -----------------------------------------------------------------------------


@given(st.integers())
def test_clamp_max_tasks_is_always_between_1_and_256(max_tasks: int) -> None:
    result = clamp_max_tasks(max_tasks)

    assert 1 <= result <= 256


@given(st.integers(min_value=1, max_value=256))
def test_clamp_max_tasks_keeps_values_inside_the_range(max_tasks: int) -> None:
    result = clamp_max_tasks(max_tasks)

    assert result == max_tasks


@pytest.mark.parametrize(
    ("max_tasks", "expected"), [(0, 1), (-1, 1), (-(10**30), 1), (257, 256), (10**30, 256)]
)
def test_clamp_max_tasks_defaults_to_1_and_caps_at_256(max_tasks: int, expected: int) -> None:
    result = clamp_max_tasks(max_tasks)

    assert result == expected


@given(st.integers())
def test_poll_timeout_is_positive_and_at_most_60_seconds(timeout_ms: int) -> None:
    result = poll_timeout(timeout_ms)

    assert timedelta(0) < result <= timedelta(seconds=60)


@given(st.integers(max_value=0))
def test_poll_timeout_defaults_to_5_seconds_when_not_positive(timeout_ms: int) -> None:
    result = poll_timeout(timeout_ms)

    assert result == timedelta(seconds=5)


@given(st.integers(min_value=1, max_value=60_000))
def test_poll_timeout_keeps_milliseconds_up_to_60_seconds(timeout_ms: int) -> None:
    result = poll_timeout(timeout_ms)

    assert result == timedelta(milliseconds=timeout_ms)


@given(st.integers(min_value=60_001))
def test_poll_timeout_cuts_longer_timeouts_to_60_seconds(timeout_ms: int) -> None:
    result = poll_timeout(timeout_ms)

    assert result == timedelta(seconds=60)


# --- fail: failure_type and retry_after_ms ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, FailureType.RETRIABLE),
        ("", FailureType.RETRIABLE),
        ("retriable", FailureType.RETRIABLE),
        ("non_retriable", FailureType.NON_RETRIABLE),
        ("retry_after", FailureType.RETRY_AFTER),
        ("permanent", FailureType.NON_RETRIABLE),
    ],
)
def test_parse_failure_type_maps_accepted_values(value: str | None, expected: FailureType) -> None:
    result = parse_failure_type(value)

    assert result is expected


@pytest.mark.parametrize("value", ["bogus", "RETRIABLE", "Permanent", " retriable", "fatal"])
def test_parse_failure_type_rejects_other_values_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        parse_failure_type(value)

    assert str(raised.value) == f"invalid failure_type: {value}"
    assert raised.value.field == "failure_type"


@given(st.text())
def test_parse_failure_type_rejects_any_other_text_only_with_invalid_request(value: str) -> None:
    if value in {"", "retriable", "non_retriable", "retry_after", "permanent"}:
        assert isinstance(parse_failure_type(value), FailureType)
    else:
        with pytest.raises(InvalidRequestError) as raised:
            parse_failure_type(value)
        assert raised.value.field == "failure_type"


@given(st.integers())
def test_clamp_retry_after_ms_is_always_between_100_ms_and_one_hour(value: int) -> None:
    result = clamp_retry_after_ms(value)

    assert 100 <= result <= 3_600_000


@given(st.integers(min_value=100, max_value=3_600_000))
def test_clamp_retry_after_ms_keeps_values_inside_the_range(value: int) -> None:
    result = clamp_retry_after_ms(value)

    assert result == value


@pytest.mark.parametrize(
    ("value", "expected"), [(-5, 100), (0, 100), (99, 100), (3_600_001, 3_600_000)]
)
def test_clamp_retry_after_ms_clamps_values_outside_the_range(value: int, expected: int) -> None:
    result = clamp_retry_after_ms(value)

    assert result == expected


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, 0, -1, -3_600_000, 3_600_001])
def test_require_duration_ms_rejects_values_outside_zero_to_upper(value: int | None) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        require_duration_ms(value, "duration_ms", 3_600_000)

    assert str(raised.value) == "duration_ms must be in (0, 3600000]"
    assert raised.value.field == "duration_ms"


def test_require_duration_ms_names_the_given_field_and_upper_bound() -> None:
    with pytest.raises(InvalidRequestError) as raised:
        require_duration_ms(11, "timeout_ms", 10)

    assert str(raised.value) == "timeout_ms must be in (0, 10]"
    assert raised.value.field == "timeout_ms"


@given(st.integers(min_value=1, max_value=3_600_000))
def test_require_duration_ms_accepts_values_in_zero_to_upper_as_milliseconds(value: int) -> None:
    result = require_duration_ms(value, "duration_ms", 3_600_000)

    assert result == timedelta(milliseconds=value)


# --- attempts --------------------------------------------------------------------------------


@given(st.integers(min_value=1), st.integers())
def test_attempt_of_prefers_a_positive_payload_attempt(payload_attempt: int, count: int) -> None:
    result = attempt_of(payload_attempt, count)

    assert result == payload_attempt


@given(st.integers(max_value=0), st.integers(min_value=1))
def test_attempt_of_falls_back_to_the_delivery_count(payload_attempt: int, count: int) -> None:
    result = attempt_of(payload_attempt, count)

    assert result == count


@pytest.mark.parametrize(
    ("attempt", "valid"),
    [(-1, False), (0, False), (1, True), (2, True), (100_000, True), (100_001, False)],
)
def test_is_valid_attempt_accepts_exactly_1_to_100000(attempt: int, valid: bool) -> None:
    result = is_valid_attempt(attempt)

    assert result is valid


# --- msg-ids ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "attempt", "expected"),
    [
        (STEP_STARTED, 1, "run1.step1.step.started.1"),
        (STEP_COMPLETED, 3, "run1.step1.step.completed.3"),
        (STEP_FAILED, 100_000, "run1.step1.step.failed.100000"),
        (STEP_COMPLETED, 0, "run1.step1.step.completed"),
        (STEP_FAILED, -2, "run1.step1.step.failed"),
    ],
)
def test_event_msg_id_appends_the_attempt_only_when_positive(
    event_type: str, attempt: int, expected: str
) -> None:
    result = event_msg_id(RunId("run1"), StepId("step1"), event_type, attempt)

    assert result == expected


def test_event_types_are_the_go_names() -> None:
    names = [STEP_STARTED, STEP_COMPLETED, STEP_FAILED, STEP_CONTINUE]

    assert names == ["step.started", "step.completed", "step.failed", "step.continue"]


@given(
    tokens.map(RunId),
    tokens.map(StepId),
    st.lists(st.tuples(event_types, st.integers(min_value=1)), min_size=2, max_size=8, unique=True),
)
def test_event_msg_ids_of_one_step_are_distinct_per_event_type_and_attempt(
    run_id: RunId, step_id: StepId, pairs: list[tuple[str, int]]
) -> None:
    msg_ids = [event_msg_id(run_id, step_id, event_type, attempt) for event_type, attempt in pairs]

    assert len(set(msg_ids)) == len(pairs)


@given(tokens.map(RunId), tokens.map(StepId), event_types, st.integers())
def test_event_msg_id_never_ends_in_attempt_zero(
    run_id: RunId, step_id: StepId, event_type: str, attempt: int
) -> None:
    result = event_msg_id(run_id, step_id, event_type, attempt)

    assert not result.endswith(".0")
    assert result.startswith(f"{run_id}.{step_id}.{event_type}")


def test_continue_msg_id_names_run_step_iteration_and_lease() -> None:
    result = continue_msg_id(RunId("run1"), StepId("step1"), 2, "lease-abc")

    assert result == "run1.step1.continue.2.lease-abc"


@given(tokens.map(RunId), tokens.map(StepId), st.integers(min_value=0), tokens)
def test_continue_msg_id_is_deterministic(
    run_id: RunId, step_id: StepId, iteration: int, lease_id: str
) -> None:
    first = continue_msg_id(run_id, step_id, iteration, lease_id)

    second = continue_msg_id(run_id, step_id, iteration, lease_id)

    assert first == second


@given(
    tokens.map(RunId),
    tokens.map(StepId),
    st.integers(min_value=0),
    st.lists(tokens, min_size=2, max_size=8, unique=True),
)
def test_continue_msg_ids_differ_per_lease(
    run_id: RunId, step_id: StepId, iteration: int, lease_ids: list[str]
) -> None:
    msg_ids = {continue_msg_id(run_id, step_id, iteration, lease_id) for lease_id in lease_ids}

    assert len(msg_ids) == len(lease_ids)


# --- pause marker and id tokens --------------------------------------------------------------


@given(st.text())
@example("")
@example('quote " and backslash \\ and <html> & \u00e9\n')
def test_pause_marker_is_the_native_json_object_for_any_name(name: str) -> None:
    marker = pause_marker(name)

    assert json.loads(marker) == {"pause_resume": name}


@given(tokens)
def test_validate_id_token_accepts_letters_digits_dash_and_underscore(value: str) -> None:
    result = validate_id_token(value, "run_id")

    assert result == value


@pytest.mark.parametrize("value", ["", "a.b", "has space", "a/b", "é", "run*", "a>", "\uff41"])
def test_validate_id_token_rejects_values_that_are_not_one_subject_token(value: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        validate_id_token(value, "step_id")

    assert raised.value.field == "step_id"


@given(st.text(), st.characters().filter(lambda c: c not in TOKEN_CHARS), st.text())
def test_validate_id_token_rejects_any_character_outside_the_alphabet(
    prefix: str, illegal: str, suffix: str
) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        validate_id_token(prefix + illegal + suffix, "run_id")

    assert raised.value.field == "run_id"


# --- poll_id and the cap of a worker (Decisions 12 and 13) -----------------------------------


@given(st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=128))
def test_validate_poll_id_accepts_1_to_128_letters_digits_dash_and_underscore(value: str) -> None:
    assert validate_poll_id(value) == value


@pytest.mark.parametrize("value", ["", "a" * 129, "a.b", "has space", "a/b", "é", "p*", "\uff41"])
def test_validate_poll_id_rejects_anything_else_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidRequestError, match="invalid poll_id") as raised:
        validate_poll_id(value)

    assert raised.value.field == "poll_id"


@given(st.integers(1, 256), st.integers(1, 256), st.integers(0, 300))
def test_poll_room_never_exceeds_the_request_nor_what_the_cap_leaves(
    requested: int, cap: int, held: int
) -> None:
    room = poll_room(requested, cap, held)

    assert room <= requested
    assert room <= cap - held
    assert room == requested or room == cap - held


@given(st.integers(1, 256), st.integers(0, 300))
def test_poll_room_without_a_cap_is_the_request(requested: int, held: int) -> None:
    assert poll_room(requested, None, held) == requested
