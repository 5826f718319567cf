"""A plain HTTP client of a bridge on the standard library, and raw JSON spans.

Every answer comes back whatever its status, since the spec asserts on 4xx and 5xx as well.
One connection per request: the bridge may close idle keep-alive connections at any time,
and a retried resolve would not be the request the spec meant to send.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

import attrs

from domain.redaction import without_userinfo

JSON: Final = "application/json"
PROBLEM_JSON: Final = "application/problem+json"
TIMEOUT_S: Final = 30.0


class UnreachableError(Exception):
    """No HTTP answer came from the bridge; the message never carries the token."""


@attrs.frozen
class Answer:
    status: int
    headers: Mapping[str, str]
    """Lower-cased names."""
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def describe(self) -> str:
        """`HTTP 400 {"detail": ...}` for messages: the status and the start of the body."""
        text = self.body.decode(errors="replace")
        return f"HTTP {self.status} {text[:300]}".rstrip()


@attrs.frozen(kw_only=True)
class Client:
    url: str
    token: str | None = attrs.field(default=None, repr=False)
    timeout_s: float = TIMEOUT_S
    _parts: urllib.parse.SplitResult = attrs.field(init=False)

    @_parts.default
    def _split(self) -> urllib.parse.SplitResult:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {without_userinfo(self.url)!r}")
        return parts

    def get(self, path: str) -> Answer:
        return self.request("GET", path)

    def post(self, path: str, body: bytes) -> Answer:
        return self.request("POST", path, body)

    def post_json(self, path: str, value: object) -> Answer:
        return self.post(path, json.dumps(value, separators=(",", ":")).encode())

    def request(self, method: str, path: str, body: bytes | None = None) -> Answer:
        headers = {"Accept": JSON}
        if body is not None:
            headers["Content-Type"] = JSON
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        connection = self._connection()
        try:
            connection.request(method, self._parts.path.rstrip("/") + path, body, headers)
            response = connection.getresponse()
            content = response.read()
        except (OSError, http.client.HTTPException) as exc:
            where = without_userinfo(self.url)
            raise UnreachableError(f"{method} {path} on {where}: {_reason(exc)}") from None
        finally:
            connection.close()
        names = {name.lower(): value for name, value in response.getheaders()}
        return Answer(response.status, names, content)

    def _connection(self) -> http.client.HTTPConnection:
        kind = (
            http.client.HTTPSConnection
            if self._parts.scheme == "https"
            else http.client.HTTPConnection
        )
        return kind(self._parts.hostname or "", self._parts.port, timeout=self.timeout_s)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def quoted(segment: str) -> str:
    """One path segment, percent-encoded."""
    return urllib.parse.quote(segment, safe="")


def raw_elements(text: str) -> list[str]:
    """The text of each element of the JSON array `text`, as it was written."""
    if not isinstance(json.loads(text), list):
        raise ValueError("not a JSON array")
    return [span for _, span in _spans(text, "[")]


def raw_members(text: str) -> dict[str, str]:
    """The text of each member's value of the JSON object `text`, as it was written."""
    if not isinstance(json.loads(text), dict):
        raise ValueError("not a JSON object")
    return dict(_spans(text, "{"))


def _spans(text: str, opening: str) -> list[tuple[str, str]]:
    """(name, text) of each value in the array or object `text`, already known to be valid
    JSON: a member's name, or "" for an element. Decoding the whole text first is what
    rejects a trailing comma or text after the end, which a walk of the spans would miss."""
    decoder = json.JSONDecoder()
    position = _skip_space(text, text.index(opening) + 1)
    spans: list[tuple[str, str]] = []
    while text[position] not in "]}":
        name = ""
        if opening == "{":
            name, end = decoder.raw_decode(text, position)
            position = _skip_space(text, _skip_space(text, end) + 1)
        _, end = decoder.raw_decode(text, position)
        spans.append((name, text[position:end]))
        position = _skip_space(text, end)
        if text[position] == ",":
            position = _skip_space(text, position + 1)
    return spans


def _skip_space(text: str, position: int) -> int:
    while text[position : position + 1] in {" ", "\t", "\n", "\r"}:
        position += 1
    return position
