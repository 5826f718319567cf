"""The log formats: JSON lines off a terminal, text on one."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from app.json_lines import msgspec_json
from app.logging_setup import (
    JsonEncoder,
    JsonFormatter,
    LogFormat,
    TextFormatter,
    configure_logging,
    formatter_for,
    stdlib_json,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def a_record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "dagnats_bridge.requests", logging.INFO, __file__, 1, message, args, None
    )
    record.__dict__.update(extra)
    return record


RECORD_SWITCHES = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")
"""What configure_logging turns off, process-wide."""


@pytest.fixture
def restored_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    switches = {name: getattr(logging, name) for name in RECORD_SWITCHES}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, value in switches.items():
        setattr(logging, name, value)


YEAR_2100 = 4_102_444_800.0
RFC3339_MILLIS_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")
ENCODERS = pytest.mark.parametrize("encode", [stdlib_json, msgspec_json])
"""The supervisor's and the workers'."""


@ENCODERS
def test_a_json_line_carries_the_extra_fields_as_keys_and_leaves_out_the_empty_ones(
    encode: JsonEncoder,
) -> None:
    record = a_record(
        "resolve %s %s",
        "r1.s1",
        "complete",
        task_id="r1.s1",
        worker_id=None,
        duration_ms=1.5,
        color_message="\x1b[36mresolve\x1b[0m",
    )

    line = json.loads(JsonFormatter(encode).format(record))

    assert line["message"] == "resolve r1.s1 complete"
    assert line["level"] == "INFO"
    assert line["logger"] == "dagnats_bridge.requests"
    assert line["time"].endswith("+00:00")
    assert line["task_id"] == "r1.s1"
    assert line["duration_ms"] == 1.5
    assert "worker_id" not in line
    assert "color_message" not in line


@given(st.lists(st.floats(min_value=0, max_value=YEAR_2100), min_size=1, max_size=20))
@example([1_700_000_000.123, 1_700_000_000.9999996, 1_700_000_001.0])
def test_a_json_lines_time_is_its_records_moment_to_the_millisecond_in_utc(
    moments: list[float],
) -> None:
    formatter = JsonFormatter()
    for created in sorted(moments):
        record = a_record("tick")
        record.created = created

        shown = json.loads(formatter.format(record))["time"]

        assert RFC3339_MILLIS_UTC.fullmatch(shown), shown
        assert shown == datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")


@ENCODERS
def test_a_json_line_holds_an_exception_on_one_line(encode: JsonEncoder) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError as exc:
        record = a_record("failed")
        record.exc_info = (type(exc), exc, exc.__traceback__)

    text = JsonFormatter(encode).format(record)

    assert "\n" not in text
    assert "RuntimeError: boom" in json.loads(text)["exception"]


def test_a_text_line_appends_the_fields_and_quotes_a_value_that_could_forge_a_line() -> None:
    record = a_record("poll", task_id="r1.s1", worker_id="w 1\nINFO fake", run_id=None)

    text = TextFormatter().format(record)

    assert text.endswith(' task_id=r1.s1 worker_id="w 1\\nINFO fake"')
    assert "\n" not in text
    assert "run_id" not in text


@pytest.mark.parametrize(
    ("log_format", "stream", "expected"),
    [
        (LogFormat.AUTO, io.StringIO(), JsonFormatter),
        (LogFormat.AUTO, Terminal(), TextFormatter),
        (LogFormat.JSON, Terminal(), JsonFormatter),
        (LogFormat.TEXT, io.StringIO(), TextFormatter),
    ],
)
def test_auto_is_text_on_a_terminal_and_json_elsewhere(
    log_format: LogFormat, stream: io.StringIO, expected: type[logging.Formatter]
) -> None:
    assert type(formatter_for(log_format, stream)) is expected


@pytest.mark.usefixtures("restored_root")
def test_configured_logging_writes_json_lines_at_the_level_asked() -> None:
    stream = io.StringIO()

    configure_logging("warning", LogFormat.AUTO, stream)
    logging.getLogger("dagnats_bridge").info("not shown")
    logging.getLogger("dagnats_bridge").warning("shown", extra={"cause": "nats down"})

    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["cause"] == "nats down"


@pytest.mark.usefixtures("restored_root")
def test_configured_logging_writes_json_lines_with_the_encoder_given() -> None:
    stream = io.StringIO()

    configure_logging("info", LogFormat.JSON, stream, encode=lambda entry: f"<{entry['message']}>")
    logging.getLogger("dagnats_bridge").info("encoded")

    assert stream.getvalue() == "<encoded>\n"


class Unserialisable:
    def __str__(self) -> str:
        return "shown by str"


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.builds(Unserialisable)
)
"""What a log call passes as an extra: JSON's types, and objects JSON has no type for."""
EXTRAS = st.dictionaries(
    st.text(),
    st.recursive(SCALARS, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner)),
)


@given(EXTRAS)
def test_the_supervisors_json_lines_say_what_a_workers_say(entry: dict[str, object]) -> None:
    """The supervisor writes its lines with the standard library, the workers theirs with
    msgspec: one log, one reading, for JSON's own values and for objects shown by `str()`.
    (msgspec writes the types it knows, a datetime, an enum, bytes, its own way; no line
    of the supervisor's carries one.)"""
    assert json.loads(stdlib_json(entry)) == json.loads(msgspec_json(entry))


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log level must be one of DEBUG, INFO"):
        configure_logging("chatty", LogFormat.TEXT, io.StringIO())


@pytest.mark.usefixtures("restored_root")
def test_configured_records_skip_the_caller_thread_and_process_no_line_shows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure_logging("info", LogFormat.JSON, io.StringIO())
    logging.getLogger().addHandler(caplog.handler)  # configure_logging replaced the root's

    logging.getLogger("dagnats_bridge").info("hello")

    (record,) = caplog.records
    assert (record.funcName, record.lineno) == ("(unknown function)", 0)
    assert (record.thread, record.threadName, record.process, record.processName) == (
        None,
        None,
        None,
        None,
    )
