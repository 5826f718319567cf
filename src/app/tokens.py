"""The bearer tokens the bridge accepts: DAGNATS_BRIDGE_TOKEN, named `default`, and the
tokens file (`--tokens-file`, format in adapters.http.auth), re-read when it changes.

The file is watched (app.token_watch) by its modification time, size and inode, checked
every second, and re-read at once on SIGHUP (with `--workers`, sent to the parent, which
passes it on to every worker; app.workers): a rotation is writing the new set (old and new
tokens side by side, then without the old one), with no restart and no signal needed, which
is also how a mounted Kubernetes Secret is updated. A file that cannot be used at a reload
leaves the tokens as they were, with a warning.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import attrs

from adapters.tokens import DEFAULT_TOKEN_NAME, Tokens, TokensError, add_token, parse_tokens
from app.settings import Settings

log = logging.getLogger("dagnats_bridge")

FileSignature = tuple[int, int, int]


@attrs.define
class TokenSource:
    """Where the accepted tokens come from, and the tokens themselves. Mutable on purpose: it
    remembers which version of the file its tokens were read from."""

    settings: Settings
    tokens: Tokens = attrs.field(factory=Tokens)
    _seen: FileSignature | None = None

    @classmethod
    def load(cls, settings: Settings) -> TokenSource:
        """The tokens of the settings; TokensError, naming the file, when they are unusable."""
        source = cls(settings)
        source._seen = source._signature()
        source.tokens.replace(source._read())
        return source

    @property
    def watches_file(self) -> bool:
        return self.settings.tokens_file is not None

    def check(self) -> None:
        """Re-read the file if it changed since it was last read."""
        if self._signature() != self._seen:
            self.reload()

    def reload(self) -> None:
        """Re-read the file; if it cannot be used, keep the tokens and warn."""
        self._seen = self._signature()
        try:
            named = self._read()
        except TokensError as exc:
            log.warning("tokens not reloaded, the %d in use stay: %s", len(self.tokens.names), exc)
            return
        self.tokens.replace(named)
        log.info("tokens reloaded: %s", ", ".join(self.tokens.names))

    def _read(self) -> dict[str, str]:
        named = (
            {} if self.settings.tokens_file is None else read_tokens_file(self.settings.tokens_file)
        )
        if self.settings.token is not None:
            try:
                add_token(named, DEFAULT_TOKEN_NAME, self.settings.token)
            except TokensError as exc:
                raise TokensError(f"DAGNATS_BRIDGE_TOKEN: {exc}") from None
        return named

    def _signature(self) -> FileSignature | None:
        if self.settings.tokens_file is None:
            return None
        try:
            found = self.settings.tokens_file.stat()
        except OSError:
            return None
        return (found.st_mtime_ns, found.st_size, found.st_ino)


def read_tokens_file(path: Path) -> dict[str, str]:
    """The file's named tokens; TokensError naming the file. Warns when others may read it."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeError) as exc:
        raise TokensError(f"tokens file {path}: cannot be read ({type(exc).__name__})") from None
    try:
        named = parse_tokens(text)
    except TokensError as exc:
        raise TokensError(f"tokens file {path}: {exc}") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning(
            "tokens file %s is readable by group or others (mode %s): chmod 600 it",
            path,
            oct(stat.S_IMODE(mode)),
        )
    return named
