"""`--workers N`: N bridge processes serving one listening socket, the parent supervising.

The parent binds the port once (so a port in use is one clear error) and starts each worker
as `python -m app serve` with the socket's descriptor and the parent's settings in its
environment; the kernel hands each new connection to one of them. Every worker is a whole
bridge with its own NATS connection: leases, poll answers and worker registrations live in
NATS, so any worker resolves what another handed out.

The workers run in a session of their own, so a Ctrl-C reaches them once, through the
parent: each SIGTERM or SIGINT the parent gets is passed on, and each worker drains as a
single bridge does (app.draining). A SIGHUP is passed on too, and stops nothing: each
worker re-reads its tokens file (app.token_watch), and a worker without one ignores it. If
a worker dies on its own, the others are stopped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import enum
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from typing import Final

import attrs

from app.settings import Settings

log = logging.getLogger("dagnats_bridge")

ENV_PREFIX: Final = "DAGNATS_BRIDGE_"
LISTEN_FD_ENV: Final = "DAGNATS_BRIDGE_LISTEN_FD"
"""Set by the parent for its workers: the inherited listening socket to serve on."""
BACKLOG: Final = 2048
"""uvicorn's default backlog."""
_PR_SET_PDEATHSIG: Final = 1


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


@attrs.define
class Supervisor:
    """The parent of the workers. Mutable on purpose: it tracks the workers alive."""

    settings: Settings
    _alive: dict[int, subprocess.Popen[bytes]] = attrs.field(init=False, factory=dict)
    _stopping: bool = attrs.field(init=False, default=False)

    def run(self) -> bool:
        """Serve until every worker has ended; True when they all ended cleanly on a stop
        signal, False when one ended on its own."""
        try:
            listener = listening_socket(self.settings.host, self.settings.port)
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s", self.settings.host, self.settings.port, exc)
            return False
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._pass_on)
        signal.signal(signal.SIGHUP, self._forward)
        with listener:
            env = worker_environment(self.settings, os.environ)
            env[LISTEN_FD_ENV] = str(listener.fileno())
            for _ in range(self.settings.workers):
                self._start(env, listener.fileno())
        if self._stopping:
            self._signal_all(signal.SIGTERM)  # the signal came before the last ones started
        log.info(
            "dagnats-bridge: %d workers on http://%s:%s (pids %s)",
            self.settings.workers,
            self.settings.host,
            self.settings.port,
            ", ".join(map(str, self._alive)),
        )
        return self._wait_all()

    def _start(self, env: dict[str, str], fd: int) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            env=env,
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_before_exec,  # noqa: PLW1509 - no threads in this process
        )
        self._alive[process.pid] = process

    def _wait_all(self) -> bool:
        clean = True
        while self._alive:
            pid, status = os.waitpid(-1, 0)
            process = self._alive.pop(pid, None)
            if process is None:
                continue
            process.returncode = code = os.waitstatus_to_exitcode(status)
            if not self._stopping or code != 0:
                log.error("worker %d ended with status %d", pid, code)
                clean = False
            if not self._stopping:
                self._stopping = True
                self._signal_all(signal.SIGTERM)
        return clean

    def _pass_on(self, signum: int, frame: object) -> None:
        self._stopping = True
        self._forward(signum, frame)

    def _forward(self, signum: int, _: object) -> None:
        log.info("%s passed on to %d worker(s)", signal.Signals(signum).name, len(self._alive))
        self._signal_all(signum)

    def _signal_all(self, signum: int) -> None:
        for pid in self._alive:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                continue  # ended, not reaped yet: the wait loop collects it


def _before_exec() -> None:
    """Run in a worker before exec. SIGHUP is ignored until the worker's tokens watch takes
    it (an ignored signal stays ignored across exec): one passed on while the worker starts,
    or to a worker without a tokens file, would otherwise end it."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _drain_when_orphaned()


def _drain_when_orphaned() -> None:
    """Run in a worker before exec: SIGTERM it, so it drains, when the parent dies even by
    SIGKILL (Linux only; elsewhere an orphaned worker serves on until stopped)."""
    libc_name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and libc_name:
        ctypes.CDLL(libc_name, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
