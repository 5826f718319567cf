"""Request bodies as the handlers read them: UTF-8 JSON of sane depth, then the codec.

JSON between systems must be UTF-8 (RFC 8259, 8.1), and raw values are passed on to the
engine byte for byte, so a body that is not UTF-8 is refused, naming the field that holds
the bad bytes when there is one. msgspec refuses JSON nested beyond the interpreter's
recursion limit by raising RecursionError; that is bad input too.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from adapters.codec import DecodeError, decode

T = TypeVar("T")


def read_json(body: bytes, cls: type[T]) -> T:
    _require_utf8(body)
    try:
        return decode(body, cls)
    except RecursionError:
        raise DecodeError("invalid JSON: nested too deeply") from None


def read_json_list(body: bytes) -> list[bytes]:
    """A JSON array's items, each as its JSON bytes for `decode`."""
    _require_utf8(body)
    try:
        items = msgspec.json.decode(body, type=list[msgspec.Raw])
    except msgspec.ValidationError:
        raise DecodeError("invalid JSON: expected an array") from None
    except msgspec.DecodeError as exc:
        raise DecodeError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise DecodeError("invalid JSON: nested too deeply") from None
    return [bytes(item) for item in items]


def _require_utf8(body: bytes) -> None:
    try:
        body.decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(
            f"invalid JSON: not UTF-8 at byte {exc.start}", _field_holding_bad_utf8(body)
        ) from None


def _field_holding_bad_utf8(body: bytes) -> str | None:
    try:
        fields = msgspec.json.decode(body, type=dict[str, msgspec.Raw])
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return None
    return next((name for name, value in fields.items() if not _is_utf8(bytes(value))), None)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True
