"""The named bearer tokens the bridge accepts, as they are checked and compared: no HTTP here,
so that a process which only supervises (`--workers`) can check a tokens file cheaply.

A tokens file holds one `name:token` per line; blank lines and lines whose first
non-blank character is `#` are ignored, and spaces around the name and the token are
dropped. A name is 1..64 of `[A-Za-z0-9_.-]`; a token is visible ASCII (no spaces) and
may contain `:` and `#`. Names and tokens are unique. Errors name the line, never the token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Final

import attrs

DEFAULT_TOKEN_NAME: Final = "default"  # noqa: S105 - a name, not a token
"""The name of the token of DAGNATS_BRIDGE_TOKEN."""
_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_FIRST_VISIBLE, _LAST_VISIBLE = 0x21, 0x7E


class TokensError(ValueError):
    """Tokens that cannot be used; the message says where, never what the token is."""


def check_token(token: str) -> None:
    if not token:
        raise TokensError("empty token")
    if not all(_FIRST_VISIBLE <= ord(char) <= _LAST_VISIBLE for char in token):
        raise TokensError("the token has a space or a character an HTTP header cannot carry")


def check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise TokensError(f"token name {name!r} is not 1..64 of [A-Za-z0-9_.-]")


def parse_tokens(text: str) -> dict[str, str]:
    """The named tokens of a tokens file (see the module); TokensError for a bad file."""
    named: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        try:
            name, token = _entry(entry)
            add_token(named, name, token)
        except TokensError as exc:
            raise TokensError(f"line {number}: {exc}") from None
    if not named:
        raise TokensError("no token in it")
    return named


def _entry(entry: str) -> tuple[str, str]:
    name, colon, token = entry.partition(":")
    if not colon:
        raise TokensError("not name:token")
    return name.strip(), token.strip()


def add_token(named: dict[str, str], name: str, token: str) -> None:
    """Add one named token, checked, to `named`."""
    check_name(name)
    check_token(token)
    if name in named:
        raise TokensError(f"token name {name!r} given twice")
    if token in named.values():
        raise TokensError(f"token {name!r} is the same as another name's")
    named[name] = token


@attrs.define
class Tokens:
    """The bearer tokens accepted now, by name. Mutable on purpose: a reload of the tokens
    file replaces them while requests read them."""

    _expected: dict[str, bytes] = attrs.field(factory=dict, repr=False)
    """The SHA-256 digest of each name's `Authorization` header value."""

    @classmethod
    def of(cls, named: Mapping[str, str]) -> Tokens:
        tokens = cls()
        tokens.replace(named)
        return tokens

    def replace(self, named: Mapping[str, str]) -> None:
        self._expected = {
            name: _digest(f"Bearer {token}".encode()) for name, token in named.items()
        }

    @property
    def names(self) -> list[str]:
        return sorted(self._expected)

    def __bool__(self) -> bool:
        return bool(self._expected)

    def name_of(self, authorization: bytes) -> str | None:
        """The name of the token an `Authorization` header carries, None for none.

        Every token is compared, in constant time, whatever matched before, and digests of
        one length are compared, not the values: the time taken tells neither whether a token
        matched, nor which, nor how long any token is.
        """
        sent = _digest(authorization)
        matched = None
        for name, expected in self._expected.items():
            if hmac.compare_digest(sent, expected):
                matched = name
        return matched


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()
