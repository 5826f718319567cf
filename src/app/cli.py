"""`dagnats-bridge serve`: flags, each also a `DAGNATS_BRIDGE_*` environment variable."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import uvicorn

from app.container import Container
from app.main import create_app
from app.settings import Backend, Settings

ENV_PREFIX = "DAGNATS_BRIDGE_"
TOKEN_ENV = "DAGNATS_BRIDGE_TOKEN"  # noqa: S105 - the variable's name, not a secret

FLAGS: dict[str, type] = {
    "backend": str,
    "host": str,
    "port": int,
    "heartbeat_interval_ms": int,
    "ack_wait_ms": int,
    "max_body_bytes": int,
    "log_level": str,
}


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="dagnats-bridge", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP bridge")
    defaults = Settings()
    for name, kind in FLAGS.items():
        default = getattr(defaults, name)
        shown = default.value if isinstance(default, Backend) else default
        serve.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=None,
            help=f"(env {ENV_PREFIX}{name.upper()}, default {shown})",
            choices=[b.value for b in Backend] if name == "backend" else None,
        )
    return root


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """A flag wins over its environment variable, which wins over the default."""
    values: dict[str, Any] = {}
    for name, kind in FLAGS.items():
        flag = getattr(args, name)
        env = environ.get(f"{ENV_PREFIX}{name.upper()}")
        if flag is not None:
            values[name] = flag
        elif env:
            values[name] = kind(env)
    if "backend" in values:
        values["backend"] = Backend(values["backend"])
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
    app = create_app(Container(settings=settings))
    # uvicorn stops gracefully on SIGTERM and SIGINT: no new connections, in-flight ends.
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, lifespan="on")
    return 0
