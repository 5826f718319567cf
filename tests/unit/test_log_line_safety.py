"""What a log line's fields cannot do: take over the line's own keys, or start a new line."""

from __future__ import annotations

import json
import logging

import pytest

from app.json_lines import msgspec_json
from app.logging_setup import JSON_KEYS, JsonEncoder, JsonFormatter, TextFormatter, stdlib_json

LOGGER = logging.getLogger("dagnats_bridge.requests")


def a_record(message: str, **extra: object) -> logging.LogRecord:
    """A record as `log.info(message, extra=extra)` makes it."""
    return LOGGER.makeRecord(LOGGER.name, logging.INFO, __file__, 1, message, (), None, extra=extra)


ENCODERS = pytest.mark.parametrize("encode", [stdlib_json, msgspec_json])
"""The supervisor's and the workers'."""


@ENCODERS
@pytest.mark.parametrize("key", sorted(JSON_KEYS - {"message"}))  # logging refuses that one
def test_an_extra_named_as_a_json_key_of_the_line_comes_under_another_name(
    key: str, encode: JsonEncoder
) -> None:
    record = a_record("resolve r1.s1", **{key: "forged"})

    line = json.loads(JsonFormatter(encode).format(record))

    assert line[f"extra_{key}"] == "forged"
    assert line.get(key) != "forged"
    assert (line["level"], line["logger"]) == ("INFO", "dagnats_bridge.requests")


def test_a_text_line_escapes_a_message_that_could_forge_a_line() -> None:
    record = a_record("task r1.s1\n2026-01-01 00:00:00,000 ERROR forged: line", task_id="r1.s1")

    text = TextFormatter().format(record)

    assert "\n" not in text
    assert text.endswith(
        ': "task r1.s1\\n2026-01-01 00:00:00,000 ERROR forged: line" task_id=r1.s1'
    )


def test_a_text_line_shows_a_plain_message_as_it_is() -> None:
    text = TextFormatter().format(a_record("dagnats-bridge stopped"))

    assert text.endswith(" INFO dagnats_bridge.requests: dagnats-bridge stopped")
