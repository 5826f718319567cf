"""The process's logging: JSON lines, or text for a person at a terminal.

Fields a caller passes as `extra=` become keys of the JSON line (`key=value` in text); a
field whose value is None is left out, and one named as a key of the line's own comes as
`extra_<name>`.

The standard library writes the JSON lines unless the caller passes an encoder: the supervisor
of `--workers` logs a few lines in its life and has no need of msgspec (3 MiB), which a
serving process passes in (app.json_lines).
"""

from __future__ import annotations

import copy
import enum
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, TextIO

JsonEncoder = Callable[[dict[str, Any]], str]


class LogFormat(enum.Enum):
    AUTO = "auto"
    """Text on a terminal, JSON lines otherwise."""
    JSON = "json"
    TEXT = "text"


LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_NOT_EXTRA: Final = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's extra: the message again, with terminal colours
}
"""The attributes every LogRecord has: anything else on one came through `extra`."""
JSON_KEYS: Final = frozenset({"time", "level", "logger", "message", "exception"})
"""The keys a JSON line has of its own, which no extra may take over."""


def extra_fields(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    """The fields that came through `extra`, as they were given; those that are None left out."""
    for key, value in vars(record).items():
        if key not in _NOT_EXTRA and value is not None and not key.startswith("_"):
            yield key, value


def stdlib_json(entry: dict[str, Any]) -> str:
    """Compact, UTF-8 as it is, and `str()` of what JSON has no type for."""
    return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339 UTC), level, logger, message, the extras.

    Two lines a task: the time's text up to the second is kept from the line before, and
    the extras go straight into the line, without a dict between, which take a sixth off
    its formatting."""

    def __init__(self, encode: JsonEncoder = stdlib_json) -> None:
        super().__init__()
        self.encode = encode
        self._last_second: tuple[int, str] = (-1, "")
        """A second and its text, one tuple: replaced whole, never half-written."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record):
            entry[f"extra_{key}" if key in JSON_KEYS else key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self.encode(entry)

    def _time(self, created: float) -> str:
        """To the millisecond, as `datetime.fromtimestamp(created, UTC).isoformat(timespec=
        "milliseconds")` writes it: the fraction rounded to the microsecond (half to even),
        then cut to the millisecond."""
        fraction, whole = math.modf(created)
        micros = round(fraction * 1_000_000)
        second = int(whole) + micros // 1_000_000
        last, text = self._last_second
        if second != last:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._last_second = (second, text)
        return f"{text}.{micros % 1_000_000 // 1000:03d}+00:00"


class TextFormatter(logging.Formatter):
    """The classic line, then ` key=value` per extra (quoted when it has spaces or quotes).
    A message or a value cannot start a line of its own: one with a line break or another
    unprintable character is shown quoted, with it escaped."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        fields = "".join(f" {key}={_shown(value)}" for key, value in extra_fields(record))
        return super().format(record) + fields

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        if record.message.isprintable():
            return super().formatMessage(record)
        escaped = copy.copy(record)
        escaped.message = _quoted(record.message)
        return super().formatMessage(escaped)


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and not any(char in text for char in ' "='):
        return text
    return _quoted(text)


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def formatter_for(
    log_format: LogFormat, stream: TextIO, encode: JsonEncoder = stdlib_json
) -> logging.Formatter:
    if log_format is LogFormat.JSON or (log_format is LogFormat.AUTO and not stream.isatty()):
        return JsonFormatter(encode)
    return TextFormatter()


def configure_logging(
    level: str,
    log_format: LogFormat,
    stream: TextIO | None = None,
    *,
    encode: JsonEncoder = stdlib_json,
) -> None:
    """Send every logger's records to `stream` (stderr) in the chosen format, JSON lines
    written by `encode`.

    ValueError for a level that is not one of LEVELS (any case).
    """
    name = level.upper()
    if name not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    target = stream if stream is not None else sys.stderr
    _collect_only_what_lines_show()
    handler = logging.StreamHandler(target)
    handler.setFormatter(formatter_for(log_format, target, encode))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(name)


def _collect_only_what_lines_show() -> None:
    """Neither format shows the caller, the thread, the process or the asyncio task: a record
    that does not look them up costs a fifth less (two a task), as the logging HOWTO's
    "Optimization" section sets out, with these very switches."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    if sys.version_info >= (3, 12):
        logging.logAsyncioTasks = False
