"""An HTTP client of a running bridge's /v1/sim/ endpoints, on the standard library only."""

from __future__ import annotations

import http
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

import attrs

from app.sim_target import Bridge, NewTask

TIMEOUT_S: Final = 30.0
JSON: Final = "application/json"


class BridgeError(Exception):
    """The bridge could not be reached or answered an error: one line, never the token."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen
class Item:
    """One element of a JSON array: its text as the bridge sent it, and its value."""

    raw: str
    value: Any


def enqueue(bridge: Bridge, task: NewTask) -> str:
    """POST /v1/sim/tasks; the created task's JSON (`task_id`, `run_id`, `step_id`)."""
    return request(bridge, "POST", "/v1/sim/tasks", task_body(task)).decode()


def events(bridge: Bridge, run_id: str) -> list[Item]:
    """GET /v1/sim/runs/{run_id}/events: the run's history, in order."""
    path = f"/v1/sim/runs/{urllib.parse.quote(run_id, safe='')}/events"
    return json_array(request(bridge, "GET", path), path)


def runs(bridge: Bridge) -> list[Item]:
    """GET /v1/sim/runs: the engine simulation's runs, in order."""
    return json_array(request(bridge, "GET", "/v1/sim/runs"), "/v1/sim/runs")


def task_body(task: NewTask) -> bytes:
    """The JSON body of an enqueue, with the raw input in it byte for byte."""
    fields = [b'"task_type":' + _string(task.task_type)]
    if task.raw_input is not None:
        fields.append(b'"input":' + task.raw_input)
    if task.run_id is not None:
        fields.append(b'"run_id":' + _string(task.run_id))
    if task.step_id is not None:
        fields.append(b'"step_id":' + _string(task.step_id))
    return b"{" + b",".join(fields) + b"}"


def _string(value: str) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def request(bridge: Bridge, method: str, path: str, body: bytes | None = None) -> bytes:
    """The body of a 2xx answer, else BridgeError with the problem's `detail`."""
    headers = {"Accept": JSON}
    if body is not None:
        headers["Content-Type"] = JSON
    if bridge.token is not None:
        headers["Authorization"] = f"Bearer {bridge.token}"
    url = bridge.url + path  # an http(s) URL: Bridge checks its scheme
    req = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310
    try:
        with _OPENER.open(req, timeout=TIMEOUT_S) as answer:
            content: bytes = answer.read()
            return content
    except urllib.error.HTTPError as exc:
        raise BridgeError(_failure(exc.code, _body_of(exc), path), exc.code) from None
    except urllib.error.URLError as exc:
        raise BridgeError(f"cannot reach {bridge.url}: {_reason(exc.reason)}") from None
    except TimeoutError:
        raise BridgeError(f"no answer from {bridge.url} within {TIMEOUT_S:g} s") from None
    except (OSError, http.client.HTTPException) as exc:
        raise BridgeError(f"the exchange with {bridge.url} failed: {_reason(exc)}") from None


def _body_of(error: urllib.error.HTTPError) -> bytes:
    with error:
        try:
            return error.read()
        except (OSError, http.client.HTTPException):
            return b""


def _failure(status: int, body: bytes, path: str) -> str:
    """`HTTP 401: unauthorized`: the problem+json `detail` when there is one."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        detail = None
    if not isinstance(detail, str) or not detail:
        detail = _phrase(status)
    line = f"HTTP {status}: {' '.join(detail.split())}"
    if status == http.HTTPStatus.NOT_FOUND and detail == "Not Found":
        line += f" ({_NOT_SERVED.get(path, _NOT_SERVED[''])})"
    return line


_NOT_SERVED: Final = {
    "/v1/sim/runs": "this bridge runs no engine simulation: serve with --simulate-engine",
    "": "this bridge serves no simulator: serve with --simulator, or --backend memory",
}
"""Why a /v1/sim/ route the CLI calls is not there (an unknown run has no events, not a 404)."""


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "error"


def _reason(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def json_array(body: bytes, path: str) -> list[Item]:
    """The elements of a JSON array, each with its own text, so that nothing is re-encoded."""
    try:
        text = body.decode()
        items = _elements(text, _opening(text))
    except (ValueError, IndexError):
        raise BridgeError(f"the answer to GET {path} is not a JSON array") from None
    return items


def _opening(text: str) -> int:
    """Where the first element (or the closing bracket) of the array in `text` is."""
    position = _skip_space(text, 0)
    if text[position] != "[":
        raise ValueError("not an array")
    return _skip_space(text, position + 1)


def _elements(text: str, position: int) -> list[Item]:
    """The elements from `position` to the closing bracket, which ends the text."""
    decoder = json.JSONDecoder()
    items: list[Item] = []
    closed = text[position] == "]"
    while not closed:
        value, end = decoder.raw_decode(text, position)
        items.append(Item(text[position:end], value))
        position = _skip_space(text, end)
        closed = text[position] == "]"
        if not closed and text[position] != ",":
            raise ValueError("not an array")
        if not closed:
            position = _skip_space(text, position + 1)
    if _skip_space(text, position + 1) != len(text):
        raise ValueError("more after the array")
    return items


def _skip_space(text: str, position: int) -> int:
    while text[position : position + 1] in {" ", "\t", "\n", "\r"}:
        position += 1
    return position


def one_line(raw: str) -> str:
    """JSON on one line: a newline outside a string is mere whitespace (JSON allows none inside)."""
    return raw.replace("\r", " ").replace("\n", " ")


def _opener() -> urllib.request.OpenerDirector:
    """urllib's handlers but the redirect one: a redirect is an error, since following it
    would send the token to wherever it points."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


_OPENER: Final = _opener()
