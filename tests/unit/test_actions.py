"""Reading a resolve action from its request (PROTOCOL.md 3; DESIGN.md Decisions 1, 5, 6)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import InvalidRequestError
from domain.models import FailureType, LeaseId, RawJson, RunId, StepFailed, WorkerId
from domain.services.actions import (
    Checkpoint,
    Complete,
    Continue,
    Fail,
    Heartbeat,
    Pause,
    ResolveRequest,
    SendSignal,
    Stream,
    WaitSignal,
    parse_action,
)

ACTIONS = [
    "complete",
    "fail",
    "pause",
    "checkpoint",
    "send_signal",
    "wait_signal",
    "continue",
    "heartbeat",
    "stream",
]
DATA = RawJson(b'{"progress": 50}')


def _invalid(request: ResolveRequest) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as raised:
        parse_action(request)
    return raised.value


# --- the action itself -----------------------------------------------------------------------


def test_a_missing_action_is_required() -> None:
    request = ResolveRequest(action="")

    error = _invalid(request)

    assert str(error) == "action is required"
    assert error.field == "action"


@pytest.mark.parametrize("action", ["explode", "destroy", "Complete", "COMPLETE", " complete"])
def test_an_action_outside_the_nine_is_invalid(action: str) -> None:
    request = ResolveRequest(action=action)

    error = _invalid(request)

    assert str(error) == f"invalid action: {action}"
    assert error.field == "action"


# --- complete, continue, heartbeat -----------------------------------------------------------


@pytest.mark.parametrize("output", [RawJson(b'{"result": [1, 2]}'), RawJson(b'"abc"'), None])
def test_complete_carries_the_output_as_sent(output: RawJson | None) -> None:
    request = ResolveRequest(action="complete", output=output)

    action = parse_action(request)

    assert action == Complete(output)


@pytest.mark.parametrize("output", [RawJson(b"[1,2,3]"), None])
def test_continue_carries_the_output_as_sent(output: RawJson | None) -> None:
    request = ResolveRequest(action="continue", output=output)

    action = parse_action(request)

    assert action == Continue(output)


def test_heartbeat_needs_no_field() -> None:
    request = ResolveRequest(action="heartbeat")

    action = parse_action(request)

    assert action == Heartbeat()


# --- fail ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure_type", "expected"),
    [
        (None, FailureType.RETRIABLE),
        ("", FailureType.RETRIABLE),
        ("retriable", FailureType.RETRIABLE),
        ("non_retriable", FailureType.NON_RETRIABLE),
        ("permanent", FailureType.NON_RETRIABLE),
    ],
)
def test_fail_reads_error_and_failure_type(failure_type: str | None, expected: FailureType) -> None:
    request = ResolveRequest(action="fail", error="boom", failure_type=failure_type)

    action = parse_action(request)

    assert action == Fail(StepFailed(error="boom", failure_type=expected, retry_after_ms=None))


def test_fail_with_an_unknown_failure_type_is_invalid() -> None:
    request = ResolveRequest(action="fail", error="boom", failure_type="bogus")

    error = _invalid(request)

    assert str(error) == "invalid failure_type: bogus"
    assert error.field == "failure_type"


@pytest.mark.parametrize("error", ["", None])
def test_fail_without_an_error_says_unspecified_error(error: str | None) -> None:
    request = ResolveRequest(action="fail", error=error, failure_type="non_retriable")

    action = parse_action(request)

    assert action == Fail(
        StepFailed(
            error="unspecified error", failure_type=FailureType.NON_RETRIABLE, retry_after_ms=None
        )
    )


def test_fail_retry_after_keeps_retry_after_ms_inside_the_range() -> None:
    request = ResolveRequest(
        action="fail", error="busy", failure_type="retry_after", retry_after_ms=1_500
    )

    action = parse_action(request)

    assert action == Fail(
        StepFailed(error="busy", failure_type=FailureType.RETRY_AFTER, retry_after_ms=1_500)
    )


def test_fail_retry_after_requires_retry_after_ms() -> None:
    request = ResolveRequest(action="fail", error="busy", failure_type="retry_after")

    error = _invalid(request)

    assert error.field == "retry_after_ms"
    assert "retry_after_ms" in str(error)


@pytest.mark.parametrize(
    ("retry_after_ms", "expected"),
    [
        (-5, 100),
        (0, 100),
        (99, 100),
        (100, 100),
        (3_600_000, 3_600_000),
        (3_600_001, 3_600_000),
        (10**12, 3_600_000),
    ],
)
def test_fail_retry_after_clamps_retry_after_ms_to_100_ms_and_one_hour(
    retry_after_ms: int, expected: int
) -> None:
    request = ResolveRequest(
        action="fail", error="busy", failure_type="retry_after", retry_after_ms=retry_after_ms
    )

    action = parse_action(request)

    assert isinstance(action, Fail)
    assert action.failure.retry_after_ms == expected


@pytest.mark.parametrize("failure_type", [None, "retriable", "non_retriable", "permanent"])
def test_fail_ignores_retry_after_ms_for_other_failure_types(failure_type: str | None) -> None:
    request = ResolveRequest(
        action="fail", error="boom", failure_type=failure_type, retry_after_ms=5_000
    )

    action = parse_action(request)

    assert isinstance(action, Fail)
    assert action.failure.retry_after_ms is None


# --- pause -----------------------------------------------------------------------------------


def test_pause_reads_duration_checkpoint_and_name() -> None:
    request = ResolveRequest(
        action="pause", duration_ms=1_500, checkpoint=RawJson(b'{"step": 3}'), name="approval"
    )

    action = parse_action(request)

    assert action == Pause(
        duration=timedelta(seconds=1.5), checkpoint=RawJson(b'{"step": 3}'), name="approval"
    )


@pytest.mark.parametrize("duration_ms", [1, 3_600_000])
def test_pause_accepts_the_bounds_of_its_duration(duration_ms: int) -> None:
    request = ResolveRequest(action="pause", duration_ms=duration_ms)

    action = parse_action(request)

    assert action == Pause(duration=timedelta(milliseconds=duration_ms), checkpoint=None, name=None)


def test_pause_treats_an_empty_name_as_no_name() -> None:
    request = ResolveRequest(action="pause", duration_ms=10, name="")

    action = parse_action(request)

    assert isinstance(action, Pause)
    assert action.name is None


@pytest.mark.parametrize("duration_ms", [None, 0, -1, 3_600_001])
def test_pause_rejects_a_duration_outside_zero_to_one_hour(duration_ms: int | None) -> None:
    request = ResolveRequest(action="pause", duration_ms=duration_ms, name="n")

    error = _invalid(request)

    assert str(error) == "duration_ms must be in (0, 3600000]"
    assert error.field == "duration_ms"


# --- checkpoint, stream ----------------------------------------------------------------------


def test_checkpoint_carries_data() -> None:
    request = ResolveRequest(action="checkpoint", data=DATA)

    action = parse_action(request)

    assert action == Checkpoint(DATA)


def test_stream_carries_data() -> None:
    request = ResolveRequest(action="stream", data=RawJson(b'"abc"'))

    action = parse_action(request)

    assert action == Stream(RawJson(b'"abc"'))


@pytest.mark.parametrize("action", ["checkpoint", "stream", "send_signal"])
def test_actions_that_write_data_require_data(action: str) -> None:
    request = ResolveRequest(action=action, run_id="run-2", name="approval")

    error = _invalid(request)

    assert str(error) == "data is required"
    assert error.field == "data"


def test_checkpoint_reads_data_not_the_checkpoint_field() -> None:
    # PROTOCOL.md 3: the field is `data` for checkpoint, `checkpoint` only for pause.
    request = ResolveRequest(action="checkpoint", checkpoint=DATA)

    error = _invalid(request)

    assert error.field == "data"


# --- send_signal -----------------------------------------------------------------------------


def test_send_signal_reads_run_id_name_and_data() -> None:
    request = ResolveRequest(action="send_signal", run_id="run-2", name="approval", data=DATA)

    action = parse_action(request)

    assert action == SendSignal(run_id=RunId("run-2"), name="approval", data=DATA)


@pytest.mark.parametrize("run_id", [None, ""])
def test_send_signal_requires_run_id_before_name(run_id: str | None) -> None:
    request = ResolveRequest(action="send_signal", run_id=run_id, name=None, data=DATA)

    error = _invalid(request)

    assert str(error) == "run_id is required"
    assert error.field == "run_id"


@pytest.mark.parametrize("name", [None, ""])
def test_send_signal_requires_name(name: str | None) -> None:
    request = ResolveRequest(action="send_signal", run_id="run-2", name=name, data=DATA)

    error = _invalid(request)

    assert str(error) == "name is required"
    assert error.field == "name"


@pytest.mark.parametrize("name", ["has space", "wild*", "greedy>", "a..b", ".a"])
def test_send_signal_rejects_a_name_that_is_not_a_kv_key(name: str) -> None:
    request = ResolveRequest(action="send_signal", run_id="run-2", name=name, data=DATA)

    error = _invalid(request)

    assert error.field == "name"
    assert str(error) != "name is required"


def test_send_signal_rejects_a_run_id_that_is_not_a_kv_key() -> None:
    request = ResolveRequest(action="send_signal", run_id="run 2", name="approval", data=DATA)

    error = _invalid(request)

    assert error.field == "run_id"


# --- wait_signal -----------------------------------------------------------------------------


@pytest.mark.parametrize("timeout_ms", [1, 1_500, 3_600_000])
def test_wait_signal_reads_name_and_timeout(timeout_ms: int) -> None:
    request = ResolveRequest(action="wait_signal", name="approval", timeout_ms=timeout_ms)

    action = parse_action(request)

    assert action == WaitSignal(name="approval", timeout=timedelta(milliseconds=timeout_ms))


@pytest.mark.parametrize("name", [None, ""])
def test_wait_signal_requires_name_before_timeout(name: str | None) -> None:
    request = ResolveRequest(action="wait_signal", name=name, timeout_ms=None)

    error = _invalid(request)

    assert str(error) == "name is required"
    assert error.field == "name"


@pytest.mark.parametrize("timeout_ms", [None, 0, -1, 3_600_001])
def test_wait_signal_rejects_a_timeout_outside_zero_to_one_hour(timeout_ms: int | None) -> None:
    request = ResolveRequest(action="wait_signal", name="approval", timeout_ms=timeout_ms)

    error = _invalid(request)

    assert str(error) == "timeout_ms must be in (0, 3600000]"
    assert error.field == "timeout_ms"


def test_wait_signal_rejects_a_name_with_a_space() -> None:
    request = ResolveRequest(action="wait_signal", name="has space", timeout_ms=1_000)

    error = _invalid(request)

    assert error.field == "name"


# --- any request -----------------------------------------------------------------------------

optional_text = st.none() | st.text(max_size=20)
optional_ints = st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
optional_raw = st.none() | st.binary(max_size=20).map(RawJson)
resolve_requests = st.builds(
    ResolveRequest,
    action=st.sampled_from(ACTIONS) | st.text(max_size=20),
    lease_id=st.none() | st.text(max_size=10).map(LeaseId),
    worker_id=st.none() | st.text(max_size=10).map(WorkerId),
    output=optional_raw,
    error=optional_text,
    failure_type=st.none()
    | st.sampled_from(["retriable", "non_retriable", "retry_after", "permanent"])
    | st.text(max_size=20),
    retry_after_ms=optional_ints,
    name=optional_text | st.sampled_from(["approval", "a.b", "k=v/1"]),
    duration_ms=optional_ints,
    checkpoint=optional_raw,
    data=optional_raw,
    run_id=optional_text | st.sampled_from(["run-2", "run_3"]),
    timeout_ms=optional_ints,
)


@given(resolve_requests)
def test_parse_action_returns_the_requested_action_or_invalid_request(
    request: ResolveRequest,
) -> None:
    try:
        action = parse_action(request)
    except InvalidRequestError:
        return

    assert action.action == request.action


fail_requests = st.builds(
    ResolveRequest,
    action=st.just("fail"),
    error=optional_text,
    failure_type=st.none()
    | st.sampled_from(["", "retriable", "non_retriable", "retry_after", "permanent"])
    | st.text(max_size=20),
    retry_after_ms=optional_ints,
)


@given(fail_requests)
def test_fail_validates_failure_type_then_retry_after_ms_and_bounds_what_it_accepts(
    request: ResolveRequest,
) -> None:
    accepted = {None, "", "retriable", "non_retriable", "retry_after", "permanent"}
    if request.failure_type not in accepted:
        assert _invalid(request).field == "failure_type"
    elif request.failure_type == "retry_after" and request.retry_after_ms is None:
        assert _invalid(request).field == "retry_after_ms"
    else:
        action = parse_action(request)

        assert isinstance(action, Fail)
        assert action.failure.error == (request.error or "unspecified error")
        if request.failure_type == "retry_after":
            assert action.failure.retry_after_ms is not None
            assert 100 <= action.failure.retry_after_ms <= 3_600_000
        else:
            assert action.failure.retry_after_ms is None
