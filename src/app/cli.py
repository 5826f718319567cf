"""`dagnats-bridge serve`: flags, each also a `DAGNATS_BRIDGE_*` environment variable."""

from __future__ import annotations

import argparse
import enum
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import uvicorn

from app.container import Container
from app.embedded import EmbeddedNats, EmbeddedNatsError
from app.main import create_app
from app.settings import Backend, ClockKind, Settings

log = logging.getLogger("dagnats_bridge")

ENV_PREFIX: Final = "DAGNATS_BRIDGE_"
TOKEN_ENV: Final = "DAGNATS_BRIDGE_TOKEN"  # noqa: S105 - the variable's name, not a secret
TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS: Final = frozenset({"0", "false", "no", "off"})

VALUED: Final[dict[str, Callable[[str], Any]]] = {
    "backend": Backend,
    "host": str,
    "port": int,
    "heartbeat_interval_ms": int,
    "ack_wait_ms": int,
    "max_body_bytes": int,
    "log_level": str,
    "nats_url": str,
    "nats_creds": Path,
    "nats_tls_ca": Path,
    "nats_tls_cert": Path,
    "nats_tls_key": Path,
    "data_dir": Path,
    "clock": ClockKind,
    "sim_max_attempts": int,
    "sim_initial_delay_ms": int,
    "sim_backoff_factor": float,
    "sim_max_iterations": int,
}
SWITCHES: Final = ("provision", "simulator")
TRISTATE: Final = ("simulate_engine",)
"""On or off when given (`--x` / `--no-x`, or a yes/no word in the environment), else the
mode's default."""


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="dagnats-bridge", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP bridge")
    defaults = Settings()
    for name, kind in VALUED.items():
        default = getattr(defaults, name)
        shown = default.value if isinstance(default, enum.Enum) else default
        choices = ""
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            choices = f"; one of {', '.join(member.value for member in kind)}"
        serve.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=None,
            help=f"(env {ENV_PREFIX}{name.upper()}, default {shown}{choices})",
        )
    for name in SWITCHES:
        serve.add_argument(
            f"--{name.replace('_', '-')}",
            action="store_true",
            default=None,
            help=f"(env {ENV_PREFIX}{name.upper()})",
        )
    for name in TRISTATE:
        serve.add_argument(
            f"--{name.replace('_', '-')}",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"(env {ENV_PREFIX}{name.upper()}, default by mode)",
        )
    return root


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """A flag wins over its environment variable, which wins over the default."""
    values: dict[str, Any] = {}
    for name, kind in VALUED.items():
        flag, env = getattr(args, name), environ.get(f"{ENV_PREFIX}{name.upper()}")
        if flag is not None:
            values[name] = flag
        elif env:
            values[name] = kind(env)
    for name in SWITCHES:
        env = environ.get(f"{ENV_PREFIX}{name.upper()}", "")
        values[name] = bool(getattr(args, name)) or env.lower() in TRUE_WORDS
    for name in TRISTATE:
        flag, env = getattr(args, name), environ.get(f"{ENV_PREFIX}{name.upper()}", "").lower()
        if flag is not None:
            values[name] = flag
        elif env in TRUE_WORDS | FALSE_WORDS:
            values[name] = env in TRUE_WORDS
        elif env:
            raise ValueError(f"{ENV_PREFIX}{name.upper()} is a yes or no word, not {env!r}")
    return Settings(token=environ.get(TOKEN_ENV) or None, **values)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = settings_from(args, os.environ)
    except ValueError as exc:
        print(f"dagnats-bridge: invalid setting: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    embedded = EmbeddedNats(settings.data_dir.resolve()) if settings.needs_embedded_nats else None
    try:
        if embedded is not None:
            embedded.start()
            settings = attrs.evolve(
                settings,
                nats_url=embedded.url,
                provision=True,
                simulator=True,
                simulate_engine=settings.simulates_engine,
            )
        serve(settings)
    except EmbeddedNatsError as exc:
        log.error("cannot start the embedded nats-server: %s", exc)
        return 1
    finally:
        if embedded is not None:
            embedded.stop()
    return 0


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then return so the caller can clean up.

    uvicorn stops gracefully on either signal (no new connections, in-flight requests end)
    and then raises the signal again with the handler it found: ours only notes it.
    """
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stopped_by)
    app = create_app(Container(settings=settings))
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, lifespan="on")


def _stopped_by(signum: int, _: object) -> None:
    log.info("stopped by %s", signal.Signals(signum).name)
