"""What a `sim` or `conformance` command talks to and sends, from its command line: the
bridge's URL and token, a task to enqueue. On no network library, so that the CLI, which
parses these for every command, loads none (app.sim_client does the HTTP)."""

from __future__ import annotations

import json
import urllib.parse
from typing import Final

import attrs

URL_ENV: Final = "DAGNATS_BRIDGE_URL"
DEFAULT_URL: Final = "http://127.0.0.1:8080"


def http_url(text: str) -> str:
    """`text` without a trailing slash when it is an http:// or https:// URL, else ValueError."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(f"not an http:// or https:// URL: {text!r}")
    return text.rstrip("/")


@attrs.frozen(kw_only=True)
class Bridge:
    url: str = attrs.field(converter=http_url)
    token: str | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class NewTask:
    """What `POST /v1/sim/tasks` is given; `raw_input` is sent byte for byte."""

    task_type: str
    raw_input: bytes | None = None
    run_id: str | None = None
    step_id: str | None = None


def raw_json(text: str) -> bytes:
    """The bytes of `text` (a command-line argument) when it is one JSON value, else ValueError."""
    raw = text.encode("utf-8", "surrogateescape")
    json.loads(raw.decode("utf-8"), parse_constant=_not_json)
    return raw


def _not_json(word: str) -> None:
    raise ValueError(f"{word} is not JSON")
