"""The parent of `--workers N`, as the command line execs it once the settings are checked
and the port is bound (app.workers): `python -m app.supervisor`, the same process id.

The exec leaves behind every module the command line loaded to check the settings, so the
process that only supervises holds little more than the interpreter: about 14 MiB, where the
command line's process held 23. This module imports only the standard library, the logging
setup (which writes its JSON lines with the standard library here), app.parent_death and
app.early_stops, for that reason; a test holds it to that. The command line blocks the stop
signals before the exec (a blocked signal stays blocked across it), and the supervisor
unblocks them once its handlers are set, so a stop that comes while the interpreter starts
is acted on, not fatal; a worker starts with SIGTERM and SIGINT blocked in the same way.

It starts each worker as `python -m app serve` with its own environment (which the command
line made: the settings, one worker each, and the listening socket's descriptor). The
workers run in a session of their own, so a Ctrl-C reaches them once, through the
supervisor: each SIGTERM or SIGINT it gets is passed on, and each worker drains as a single
bridge does (app.draining). A SIGHUP is passed on too, and stops nothing: each worker
re-reads its tokens file (app.token_watch), and a worker without one ignores it. If a worker
dies on its own, the others are stopped. When they have all ended, the embedded
nats-server, if the command line started one, is stopped last.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Final

from app.early_stops import SERVING_STOP_SIGNALS
from app.logging_setup import LogFormat, configure_logging
from app.parent_death import signal_when_parent_dies

log = logging.getLogger("dagnats_bridge")

LISTEN_FD_ENV: Final = "DAGNATS_BRIDGE_LISTEN_FD"
"""Set for the workers: the inherited listening socket to serve on."""
STOP_SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
"""Blocked by the command line from just before its exec until the handlers are set."""
STOP_TIMEOUT_S: Final = 10.0
"""How long the embedded nats-server has to exit on SIGTERM before it is killed."""
_EXIT_POLL_S: Final = 0.05


class Supervisor:
    """Mutable on purpose: it tracks the workers alive. A plain class: attrs would be the
    biggest import of this process."""

    def __init__(self, workers: int, address: str, embedded_nats: int | None) -> None:
        self.workers = workers
        self.address = address
        self.embedded_nats = embedded_nats
        self._alive: dict[int, subprocess.Popen[bytes]] = {}
        self._stopping = False

    def run(self) -> bool:
        """Serve until every worker has ended; True when they all ended cleanly on a stop
        signal, False when one ended on its own."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._pass_on)
        signal.signal(signal.SIGHUP, self._forward)
        # Before any worker starts: a worker inherits the mask.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        try:
            self._start_all(int(os.environ[LISTEN_FD_ENV]))
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("cannot start the workers: %s", exc)
            self._stopping = True
            self._signal_all(signal.SIGTERM)
            self._wait_all()
            clean = False
        else:
            clean = self._wait_all()
        if self.embedded_nats is not None:
            _stop(self.embedded_nats)
        return clean

    def _start_all(self, listener: int) -> None:
        try:
            for _ in range(self.workers):
                self._start(listener)
        finally:
            os.close(listener)
        if self._stopping:
            self._signal_all(signal.SIGTERM)  # the signal came before the last ones started
        log.info(
            "dagnats-bridge: %d workers on %s (pids %s)",
            self.workers,
            self.address,
            ", ".join(map(str, self._alive)),
        )

    def _start(self, listener: int) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            pass_fds=(listener,),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_before_exec,  # noqa: PLW1509 - no threads in this process
        )
        self._alive[process.pid] = process

    def _wait_all(self) -> bool:
        clean = True
        while self._alive:
            pid, status = os.waitpid(-1, 0)
            if pid == self.embedded_nats:
                log.error("the embedded nats-server ended with status %d", _code(status))
                self.embedded_nats = None
                continue
            process = self._alive.pop(pid, None)
            if process is None:
                continue
            process.returncode = code = _code(status)
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


def _code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


def _stop(pid: int) -> None:
    """SIGTERM to a child, then SIGKILL if it has not exited within STOP_TIMEOUT_S."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
        time.sleep(_EXIT_POLL_S)  # a child's exit has no event to await here (Popen polls too)


def _before_exec() -> None:
    """Run in a worker before exec.

    - SIGTERM, so it drains, when the supervisor dies, even by SIGKILL.
    - SIGHUP is ignored until the worker's tokens watch takes it (an ignored signal stays
      ignored across exec): one passed on while the worker starts, or to a worker without
      a tokens file, would otherwise end it.
    - SIGTERM and SIGINT stay blocked until the worker notes them (app.early_stops): one
      passed on while its interpreter starts would otherwise kill it, and the bridge would
      exit 1 as for a worker that died on its own.
    """
    signal_when_parent_dies(signal.SIGTERM)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, SERVING_STOP_SIGNALS)


def command(
    workers: int, address: str, log_level: str, log_format: LogFormat, embedded_nats: int | None
) -> list[str]:
    """The command line that execs into the supervisor."""
    argv = [sys.executable, "-m", "app.supervisor", "--workers", str(workers)]
    argv += ["--address", address, "--log-level", log_level, "--log-format", log_format.value]
    if embedded_nats is not None:
        argv += ["--embedded-nats-pid", str(embedded_nats)]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.supervisor", description=__doc__)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--address", required=True, help="where the workers serve, for the log")
    parser.add_argument("--log-level", required=True)
    parser.add_argument("--log-format", type=LogFormat, required=True)
    parser.add_argument("--embedded-nats-pid", type=int)
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    supervisor = Supervisor(args.workers, args.address, args.embedded_nats_pid)
    return 0 if supervisor.run() else 1


if __name__ == "__main__":
    raise SystemExit(main())
