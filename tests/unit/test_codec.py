"""The wire codec: round trips, Go-like encoding and strict decoding (PROTOCOL.md 1.3, 1.4, 2.3).

Raw JSON values pass through byte-exact (DESIGN.md Decision 4).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from adapters.codec import (
    DecodeError,
    decode,
    decode_list,
    encode,
    format_timestamp,
    parse_timestamp,
)
from domain.models import (
    Event,
    FailureType,
    LeaseId,
    PolledTask,
    RawJson,
    RunId,
    StepFailed,
    StepId,
    TaskId,
    TaskPayload,
    TaskType,
    WorkerId,
    WorkerRegistration,
)
from domain.services.actions import ResolveRequest

MOMENT = datetime(2026, 7, 19, 12, 0, 0, 123456, tzinfo=UTC)
# RFC 3339 as Go's RFC3339Nano writes UTC: four-digit year, fraction without trailing zeros.
RFC3339_NANO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z")

# --- strategies ------------------------------------------------------------------------------

int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | int64s
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)


def _dumps(value: Any, separators: tuple[str, str], indent: int | str | None, ascii_: bool) -> str:
    return json.dumps(value, separators=separators, indent=indent, ensure_ascii=ascii_)


json_texts = st.builds(
    _dumps,
    json_values,
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" ,  ", " :\t")]),
    indent=st.none() | st.integers(min_value=0, max_value=3) | st.just("\t"),
    ascii_=st.booleans(),
)
raw_json = json_texts.map(lambda text: RawJson(text.encode()))
# Round trips stay in years 1970..2200: the edges of the calendar are the timestamp tests' job.
wire_datetimes = st.datetimes(
    min_value=datetime(1970, 1, 1),  # noqa: DTZ001 (Hypothesis bounds are naive)
    max_value=datetime(2200, 1, 1),  # noqa: DTZ001
    timezones=st.just(UTC),
)
utc_datetimes = st.datetimes(timezones=st.just(UTC))
optional_text = st.none() | st.text()
string_maps = st.none() | st.dictionaries(st.text(), st.text(), max_size=4)

task_payloads = st.builds(
    TaskPayload,
    run_id=st.text().map(RunId),
    step_id=st.text().map(StepId),
    task_id=st.none() | st.text().map(TaskId),
    iteration=int64s,
    attempt=int64s,
    input=st.none() | raw_json,
    metadata=string_maps,
    required_capabilities=st.none() | st.lists(st.text(), max_size=4),
    dispatch_nonce=optional_text,
    workflow_name=optional_text,
    traceparent=optional_text,
    tracestate=optional_text,
)
worker_registrations = st.builds(
    WorkerRegistration,
    worker_id=st.text().map(WorkerId),
    task_types=st.lists(st.text().map(TaskType), max_size=4),
    language=st.text(),
    transport=st.text(),
    max_tasks=int64s,
    last_seen=wire_datetimes,
    metadata=string_maps,
)
polled_tasks = st.builds(
    PolledTask,
    task_id=st.text().map(TaskId),
    run_id=st.text().map(RunId),
    step_id=st.text().map(StepId),
    attempt=int64s,
    lease_id=st.text().map(LeaseId),
    iteration=int64s,
    input=st.none() | raw_json,
    metadata=string_maps,
    workflow_name=optional_text,
    dispatch_nonce=optional_text,
    traceparent=optional_text,
    tracestate=optional_text,
    checkpoint=st.none() | raw_json,
)
raw_payload_events = st.builds(
    Event,
    type=st.text(),
    run_id=st.text().map(RunId),
    step_id=st.none() | st.text().map(StepId),
    timestamp=wire_datetimes,
    payload=st.none() | raw_json,
    trace_parent=optional_text,
    trace_state=optional_text,
    worker_id=st.none() | st.text().map(WorkerId),
    attempt_number=st.none() | int64s,
)

# --- round trips -----------------------------------------------------------------------------


ROUND_TRIPS: list[tuple[type[Any], st.SearchStrategy[Any]]] = [
    (TaskPayload, task_payloads),
    (WorkerRegistration, worker_registrations),
    (PolledTask, polled_tasks),
    (Event, raw_payload_events),
]
each_wire_type = pytest.mark.parametrize(
    ("wire_type", "values"), ROUND_TRIPS, ids=[kind.__name__ for kind, _ in ROUND_TRIPS]
)


@each_wire_type
@given(data=st.data())
def test_every_wire_type_round_trips(
    wire_type: type[Any], values: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    value = data.draw(values)

    decoded = decode(encode(value), wire_type)

    assert decoded == value


@each_wire_type
@given(data=st.data())
def test_a_wire_value_encodes_the_fields_off_their_default_in_field_order(
    wire_type: type[Any], values: st.SearchStrategy[Any], data: st.DataObject
) -> None:
    value = data.draw(values)
    expected = [
        field.name
        for field in attrs.fields(wire_type)
        if field.default is attrs.NOTHING or getattr(value, field.name) != _default(field)
    ]

    keys = list(json.loads(encode(value)))

    assert keys == expected


def _default(field: attrs.Attribute[Any]) -> Any:
    default: Any = field.default
    return default.factory() if isinstance(default, attrs.Factory) else default  # type: ignore[arg-type]


@given(st.lists(polled_tasks, max_size=4))
def test_a_poll_answer_round_trips_as_a_list(tasks: list[PolledTask]) -> None:
    data = encode(tasks)

    decoded = decode_list(data, PolledTask)

    assert decoded == tasks


@pytest.mark.parametrize("body", [b"", b"{}", b'"a"', b"[1", b"[1]"])
def test_decode_list_refuses_what_is_not_an_array_of_objects(body: bytes) -> None:
    with pytest.raises(DecodeError) as raised:
        decode_list(body, PolledTask)

    assert str(raised.value).startswith("invalid JSON:")


@given(json_texts)
@example('{ "a" : [1, 2.50, "\\u00e9\\n\\"<&>"] ,\n  "b": {}}')
@example("1e2")
def test_raw_input_comes_back_byte_exact(text: str) -> None:
    raw = RawJson(text.encode())
    task = TaskPayload(run_id=RunId("run1"), step_id=StepId("step1"), input=raw)

    decoded = decode(encode(task), TaskPayload)

    assert decoded.input == text.encode()


# --- timestamps ------------------------------------------------------------------------------


@given(utc_datetimes)
@example(datetime(1, 1, 1, tzinfo=UTC))
@example(datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
@example(datetime(2026, 7, 19, 12, 0, 0, 100000, tzinfo=UTC))
def test_format_timestamp_writes_rfc3339_nano_utc(moment: datetime) -> None:
    text = format_timestamp(moment)

    assert text.endswith("Z")
    assert RFC3339_NANO_UTC.fullmatch(text), text


@given(utc_datetimes)
@example(datetime(1, 1, 1, tzinfo=UTC))
def test_parse_timestamp_reads_back_what_format_timestamp_wrote(moment: datetime) -> None:
    text = format_timestamp(moment)

    parsed = parse_timestamp(text)

    assert parsed == moment


def test_format_timestamp_writes_the_go_zero_time_with_four_year_digits() -> None:
    zero = datetime(1, 1, 1, tzinfo=UTC)

    text = format_timestamp(zero)

    assert text == "0001-01-01T00:00:00Z"


@given(
    # Hypothesis's bounds are naive; the test gives each moment its zone.
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),  # noqa: DTZ001
    st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)),
    st.sampled_from(["", "GMT", "local"]),
)
def test_format_timestamp_writes_any_zone_as_the_same_moment_in_utc(
    wall: datetime, offset: timedelta, name: str
) -> None:
    moment = wall.replace(tzinfo=timezone(offset, name) if name else timezone(offset))

    text = format_timestamp(moment)

    assert text == format_timestamp(moment.astimezone(UTC))
    assert parse_timestamp(text) == moment


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (MOMENT, "2026-07-19T12:00:00.123456Z"),
        (MOMENT.replace(microsecond=120000), "2026-07-19T12:00:00.12Z"),
        (MOMENT.replace(microsecond=1), "2026-07-19T12:00:00.000001Z"),
        (MOMENT.replace(microsecond=0), "2026-07-19T12:00:00Z"),
        (
            datetime(2026, 7, 19, 14, 30, 0, 500000, tzinfo=timezone(timedelta(hours=2))),
            "2026-07-19T12:30:00.5Z",
        ),
    ],
)
def test_format_timestamp_drops_trailing_zeros_and_converts_to_utc(
    moment: datetime, expected: str
) -> None:
    text = format_timestamp(moment)

    assert text == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-07-19T12:00:00.123456789Z", MOMENT),
        ("2026-07-19T12:00:00.123456Z", MOMENT),
        ("2026-07-19T12:00:00.123456+00:00", MOMENT),
        ("2026-07-19T12:00:00.123456789+00:00", MOMENT),
        ("2026-07-19T14:00:00.123456+02:00", MOMENT),
        ("2026-07-19T12:00:00Z", MOMENT.replace(microsecond=0)),
        ("2026-07-19T12:00:00.5+00:00", MOMENT.replace(microsecond=500000)),
    ],
)
def test_parse_timestamp_accepts_nanoseconds_and_offsets(text: str, expected: datetime) -> None:
    parsed = parse_timestamp(text)

    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


@given(wire_datetimes, st.integers(min_value=0, max_value=999))
def test_parse_timestamp_cuts_nanoseconds_to_microseconds(moment: datetime, nanos: int) -> None:
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}:"
        f"{moment.minute:02d}:{moment.second:02d}.{moment.microsecond:06d}{nanos:03d}Z"
    )

    parsed = parse_timestamp(text)

    assert parsed == moment


def test_parse_timestamp_refuses_a_timestamp_without_a_zone() -> None:
    with pytest.raises(ValueError, match="zone"):
        parse_timestamp("2026-07-19T12:00:00")


# --- encoding --------------------------------------------------------------------------------


def test_event_without_optional_fields_has_only_type_run_id_and_timestamp() -> None:
    event = Event(type="step.started", run_id=RunId("run1"), timestamp=MOMENT)

    body = json.loads(encode(event))

    assert body == {
        "type": "step.started",
        "run_id": "run1",
        "timestamp": "2026-07-19T12:00:00.123456Z",
    }


def test_event_keys_follow_the_go_order() -> None:
    event = Event(
        attempt_number=2,
        worker_id=WorkerId("w1"),
        trace_state="ts",
        trace_parent="tp",
        payload=RawJson(b'{"x":1}'),
        timestamp=MOMENT,
        step_id=StepId("step1"),
        run_id=RunId("run1"),
        type="step.completed",
    )

    keys = list(json.loads(encode(event)))

    assert keys == [
        "type",
        "run_id",
        "step_id",
        "timestamp",
        "payload",
        "trace_parent",
        "trace_state",
        "worker_id",
        "attempt_number",
    ]


def test_event_raw_payload_is_written_verbatim() -> None:
    payload = RawJson(b'{ "a" : [1, 2.50] }')
    event = Event(type="step.completed", run_id=RunId("r"), timestamp=MOMENT, payload=payload)

    data = encode(event)

    assert b'"payload":{ "a" : [1, 2.50] }' in data


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (
            StepFailed(error="busy", failure_type=FailureType.RETRY_AFTER, retry_after_ms=1500),
            {"error": "busy", "failure_type": "retry_after", "retry_after_ms": 1500},
        ),
        (
            StepFailed(error="boom", failure_type=FailureType.NON_RETRIABLE),
            {"error": "boom", "failure_type": "non_retriable"},
        ),
        (
            StepFailed(error="", failure_type=FailureType.RETRIABLE),
            {"error": "", "failure_type": "retriable"},
        ),
    ],
)
def test_step_failed_payload_encodes_error_failure_type_and_optional_retry_after(
    failure: StepFailed, expected: dict[str, object]
) -> None:
    event = Event(
        type="step.failed", run_id=RunId("r"), timestamp=MOMENT, payload=failure, attempt_number=1
    )

    payload = json.loads(encode(event))["payload"]

    assert payload == expected
    assert list(payload) == list(expected)


def test_polled_task_at_iteration_zero_has_no_iteration_key() -> None:
    task = PolledTask(
        task_id=TaskId("r.s"),
        run_id=RunId("r"),
        step_id=StepId("s"),
        attempt=1,
        lease_id=LeaseId("l1"),
    )

    body = json.loads(encode(task))

    assert body == {"task_id": "r.s", "run_id": "r", "step_id": "s", "attempt": 1, "lease_id": "l1"}


def test_polled_task_after_iteration_zero_has_its_iteration() -> None:
    task = PolledTask(
        task_id=TaskId("r.s"),
        run_id=RunId("r"),
        step_id=StepId("s"),
        attempt=1,
        lease_id=LeaseId("l1"),
        iteration=3,
    )

    body = json.loads(encode(task))

    assert body["iteration"] == 3


def test_task_payload_at_its_defaults_has_only_run_id_and_step_id() -> None:
    task = TaskPayload(run_id=RunId("r"), step_id=StepId("s"))

    body = json.loads(encode(task))

    assert body == {"run_id": "r", "step_id": "s"}


def test_an_empty_list_encodes_as_an_empty_array_not_null() -> None:
    data = encode([])

    assert data == b"[]"


# --- decoding --------------------------------------------------------------------------------

TASK = '"run_id":"r","step_id":"s"'


@pytest.mark.parametrize(
    ("body", "cls", "field"),
    [
        (f'{{{TASK},"attempt":"5"}}', TaskPayload, "attempt"),
        (f'{{{TASK},"attempt":1.5}}', TaskPayload, "attempt"),
        (f'{{{TASK},"iteration":true}}', TaskPayload, "iteration"),
        ('{"run_id":5,"step_id":"s"}', TaskPayload, "run_id"),
        (f'{{{TASK},"workflow_name":false}}', TaskPayload, "workflow_name"),
        (f'{{{TASK},"metadata":{{"a":1}}}}', TaskPayload, "metadata"),
        (f'{{{TASK},"metadata":[]}}', TaskPayload, "metadata"),
        (f'{{{TASK},"required_capabilities":[1]}}', TaskPayload, "required_capabilities"),
        (f'{{{TASK},"required_capabilities":"gpu"}}', TaskPayload, "required_capabilities"),
        (
            '{"worker_id":"w","task_types":"abc","language":"go","transport":"http",'
            '"max_tasks":1,"last_seen":"2026-07-19T12:00:00Z"}',
            WorkerRegistration,
            "task_types",
        ),
        ('{"action":5}', ResolveRequest, "action"),
        ('{"retry_after_ms":"100"}', ResolveRequest, "retry_after_ms"),
        ('{"duration_ms":true}', ResolveRequest, "duration_ms"),
        ('{"timeout_ms":1.5}', ResolveRequest, "timeout_ms"),
    ],
    ids=[
        "string-for-int",
        "float-for-int",
        "bool-for-int",
        "int-for-str",
        "bool-for-str",
        "int-in-str-map",
        "array-for-map",
        "int-in-str-list",
        "string-for-list",
        "string-for-task-types",
        "int-for-action",
        "string-for-optional-int",
        "bool-for-optional-int",
        "float-for-optional-int",
    ],
)
def test_decode_refuses_a_value_of_the_wrong_json_type_naming_the_field(
    body: str, cls: type[Any], field: str
) -> None:
    with pytest.raises(DecodeError) as raised:
        decode(body.encode(), cls)

    assert str(raised.value).startswith("invalid JSON:")
    assert raised.value.field == field


@pytest.mark.parametrize("field", ["attempt", "iteration", "task_id", "run_id"])
def test_decode_refuses_a_number_beyond_the_float_range_naming_the_field(field: str) -> None:
    fields = {"run_id": '"r"', "step_id": '"s"'} | {field: "1e400"}
    body = "{" + ",".join(f'"{key}":{value}' for key, value in fields.items()) + "}"

    with pytest.raises(DecodeError) as raised:
        decode(body.encode(), TaskPayload)

    assert str(raised.value).startswith("invalid JSON:")
    assert raised.value.field == field


def test_decode_reports_a_missing_required_field() -> None:
    with pytest.raises(DecodeError) as raised:
        decode(b'{"run_id":"r"}', TaskPayload)

    assert str(raised.value).startswith("invalid JSON:")
    assert raised.value.field == "step_id"


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"{", b'{"action":"complete",}', b"\xff\xfe", b"{} {}", b'{"a":1} x'],
    ids=["empty", "text", "unclosed", "trailing-comma", "not-utf8", "two-values", "trailing-text"],
)
def test_decode_refuses_bytes_that_are_not_one_json_value(body: bytes) -> None:
    with pytest.raises(DecodeError) as raised:
        decode(body, ResolveRequest)

    assert str(raised.value).startswith("invalid JSON:")


@pytest.mark.parametrize("body", [b"[]", b'[{"action":"complete"}]', b'"complete"', b"1", b"true"])
def test_decode_refuses_json_that_is_not_an_object(body: bytes) -> None:
    with pytest.raises(DecodeError) as raised:
        decode(body, ResolveRequest)

    assert str(raised.value).startswith("invalid JSON:")


def test_decode_reads_a_null_body_as_all_defaults() -> None:
    request = decode(b"null", ResolveRequest)

    assert request == ResolveRequest()


def test_decode_ignores_unknown_keys() -> None:
    body = b'{"action":"complete","explode":true,"nested":{"x":[1,null]},"Action":"fail"}'

    request = decode(body, ResolveRequest)

    assert request == ResolveRequest(action="complete")


@pytest.mark.parametrize(
    ("body", "cls", "expected"),
    [
        (b'{"action":null}', ResolveRequest, ResolveRequest()),
        (b'{"action":"fail","error":null}', ResolveRequest, ResolveRequest(action="fail")),
        (b'{"retry_after_ms":null}', ResolveRequest, ResolveRequest()),
        (
            f'{{{TASK},"attempt":null,"iteration":null}}'.encode(),
            TaskPayload,
            TaskPayload(run_id=RunId("r"), step_id=StepId("s")),
        ),
        (
            f'{{{TASK},"metadata":null,"workflow_name":null}}'.encode(),
            TaskPayload,
            TaskPayload(run_id=RunId("r"), step_id=StepId("s")),
        ),
    ],
    ids=["str-field", "optional-str", "optional-int", "int-fields", "optional-fields"],
)
def test_decode_reads_null_for_a_non_raw_field_as_its_default(
    body: bytes, cls: type[Any], expected: object
) -> None:
    decoded = decode(body, cls)

    assert decoded == expected


def test_decode_keeps_null_for_a_raw_field_as_the_raw_text() -> None:
    request = decode(b'{"output":null}', ResolveRequest)

    assert request.output == b"null"


def test_decode_keeps_a_raw_field_byte_exact() -> None:
    body = b'{"action":"checkpoint","data":{ "progress" : 5e1, "s":"\\u00e9" }}'

    request = decode(body, ResolveRequest)

    assert request.data == b'{ "progress" : 5e1, "s":"\\u00e9" }'


@given(st.binary())
@example(b"null")
@example(b'{"run_id":"r","step_id":"s","attempt":1e400}')
def test_decode_of_any_bytes_gives_a_task_payload_or_a_decode_error(data: bytes) -> None:
    try:
        decoded = decode(data, TaskPayload)
    except DecodeError:
        return

    assert isinstance(decoded, TaskPayload)


TASK_PAYLOAD_KEYS = [
    "run_id",
    "step_id",
    "task_id",
    "attempt",
    "iteration",
    "input",
    "metadata",
    "required_capabilities",
    "dispatch_nonce",
    "workflow_name",
    "traceparent",
    "tracestate",
]
field_names = st.sampled_from(TASK_PAYLOAD_KEYS)
value_texts = json_texts | st.from_regex(r"-?[1-9]e[3-9][0-9]{2}", fullmatch=True)
json_object_bodies = st.dictionaries(field_names | st.text(), value_texts, max_size=6).map(
    lambda fields: (
        "{" + ",".join(f"{json.dumps(key)}:{value}" for key, value in fields.items()) + "}"
    ).encode()
)


@given(json_object_bodies)
def test_decode_of_any_json_object_gives_a_task_payload_or_a_decode_error(data: bytes) -> None:
    try:
        decoded = decode(data, TaskPayload)
    except DecodeError:
        return

    assert isinstance(decoded, TaskPayload)
