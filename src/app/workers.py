"""`--workers N`: N bridge processes serving one listening socket, the parent supervising.

The command line binds the port once (so a port in use is one clear error), then execs into
the supervisor (app.supervisor) with the socket's descriptor and the settings in its
environment, which it gives each worker as it starts it; the kernel hands each new
connection to one of them. Every worker is a whole bridge with its own NATS connection:
leases, poll answers and worker registrations live in NATS, so any worker resolves what
another handed out.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping
from typing import Final

import attrs

from app import supervisor
from app.settings import Settings
from app.supervisor import LISTEN_FD_ENV

log = logging.getLogger("dagnats_bridge")

ENV_PREFIX: Final = "DAGNATS_BRIDGE_"
BACKLOG: Final = 2048
"""uvicorn's default backlog."""


def worker_environment(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment that gives a worker `settings` (one worker each): the inherited one
    without any `DAGNATS_BRIDGE_*`, then every setting that has a value."""
    env = {key: value for key, value in environ.items() if not key.startswith(ENV_PREFIX)}
    for field in attrs.fields(Settings):
        value = getattr(settings, field.name)
        if value is not None:
            env[f"{ENV_PREFIX}{field.name.upper()}"] = _env_word(value)
    env[f"{ENV_PREFIX}WORKERS"] = "1"
    return env


def _env_word(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


def inherited_socket(environ: Mapping[str, str]) -> socket.socket | None:
    """In a worker: the parent's listening socket; None in a bridge of its own."""
    fd = environ.get(LISTEN_FD_ENV)
    return socket.socket(fileno=int(fd)) if fd else None


def supervise(settings: Settings, embedded_nats: int | None) -> int:
    """Bind the port, then exec into the supervisor of `settings.workers` workers, which
    stops the embedded nats-server (`embedded_nats`, its pid) when they have ended.

    Returns only when that could not be done: 1, with the reason logged.
    """
    try:
        listener = listening_socket(settings.host, settings.port)
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        return 1
    listener.set_inheritable(True)
    env = worker_environment(settings, os.environ)
    env[LISTEN_FD_ENV] = str(listener.fileno())
    argv = supervisor.command(
        settings.workers,
        f"http://{settings.host}:{settings.port}",
        settings.log_level,
        settings.log_format,
        embedded_nats,
    )
    sys.stderr.flush()
    signal.pthread_sigmask(signal.SIG_BLOCK, supervisor.STOP_SIGNALS)
    try:
        os.execve(sys.executable, argv, env)  # noqa: S606 - this interpreter, our module
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, supervisor.STOP_SIGNALS)
        log.error("cannot start the supervisor of the workers: %s", exc)
    listener.close()
    return 1
