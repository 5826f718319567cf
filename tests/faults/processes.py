"""The processes a fault scenario runs and breaks: nats-servers (alone or a 3-node cluster) and
bridges on fixed loopback ports, so a restarted one is found where the old one was.

Every child gets SIGKILL if this process dies (PDEATHSIG), and `ProcessGroup` stops whatever
is still running when the scenario ends, failed or not.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Final, Protocol

import attrs

# The embedded server's PDEATHSIG, reused for every child here.
from app.embedded import (
    _die_with_parent,
    accepts_connections,
    free_port,
    nats_server_binary,
    terminate,
)
from tests.integration.conftest import BRIDGE_COMMAND, BridgeProcess, wait_until_healthy

STOP_TIMEOUT_S: Final = 20.0
READY_TIMEOUT_S: Final = 20.0
CLUSTER_NAME: Final = "faults"


class Stoppable(Protocol):
    def stop(self) -> None: ...


@attrs.define
class ProcessGroup:
    """Everything a scenario started, stopped in reverse order. Mutable on purpose."""

    members: list[Stoppable] = attrs.field(factory=list)

    def add(self, member: Stoppable) -> None:
        self.members.append(member)

    def stop_all(self) -> None:
        for member in reversed(self.members):
            member.stop()


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as sink:
        return subprocess.Popen(
            command,
            env={k: v for k, v in os.environ.items() if not k.startswith("DAGNATS_BRIDGE_")},
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, no locks taken
        )


def _pid(process: subprocess.Popen[bytes] | None) -> int:
    if process is None:
        raise RuntimeError("the process was never started")
    return process.pid


def _wait(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None:
        process.wait(timeout=STOP_TIMEOUT_S)


class _OwnsProcess:
    """Stop, pid and wait of the one process a component owns (None until started)."""

    process: subprocess.Popen[bytes] | None

    def stop(self) -> None:
        terminate(self.process, STOP_TIMEOUT_S)

    @property
    def pid(self) -> int:
        return _pid(self.process)

    def wait(self) -> None:
        _wait(self.process)


@attrs.define
class NatsNode(_OwnsProcess):
    """One nats-server with JetStream on loopback, alone or one node of a cluster.

    Restartable on the same ports and store. Mutable on purpose: it owns its process.
    """

    store_dir: Path
    name: str = "n1"
    port: int = attrs.field(factory=free_port)
    cluster_port: int | None = None
    routes: list[int] = attrs.field(factory=list)
    process: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.store_dir / "nats-server.log"

    def command(self) -> list[str]:
        command = [
            nats_server_binary(),
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "-n", self.name,
            "-js",
            "-sd", str(self.store_dir),
            "-l", str(self.log),
        ]  # fmt: skip
        if self.cluster_port is not None:
            routes = ",".join(f"nats://127.0.0.1:{port}" for port in self.routes)
            command += [
                "--cluster_name", CLUSTER_NAME,
                "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                "--routes", routes,
            ]  # fmt: skip
        return command

    def start(self) -> None:
        """Start and wait until it accepts clients (a cluster node: before JetStream has a
        meta leader, which needs a quorum of nodes up)."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        started_at = len(_read(self.log))
        self.process = _spawn(self.command(), self.store_dir / "stdout.log")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server {self.name} exited: {_read(self.log)[-2000:]}")
            ready = "Server is ready" in _read(self.log)[started_at:]
            if ready and accepts_connections("127.0.0.1", self.port):
                return
            time.sleep(0.02)  # the child has no readiness event we could await
        raise RuntimeError(f"nats-server {self.name} not ready: {_read(self.log)[-2000:]}")


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def cluster_nodes(root: Path, size: int = 3) -> list[NatsNode]:
    """Nodes of one cluster, each routed to all the others (not started)."""
    cluster_ports = [free_port() for _ in range(size)]
    return [
        NatsNode(
            root / f"n{index + 1}",
            name=f"n{index + 1}",
            cluster_port=cluster_ports[index],
            routes=[port for port in cluster_ports if port != cluster_ports[index]],
        )
        for index in range(size)
    ]


@attrs.define
class Bridge(_OwnsProcess):
    """`dagnats-bridge serve` on a fixed port against external NATS, engine simulation off.

    Restartable on the same port. Mutable on purpose: it owns its process.
    """

    log_dir: Path
    nats_url: str
    flags: tuple[str, ...] = ()
    port: int = attrs.field(factory=free_port)
    process: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.log_dir / f"bridge-{self.port}.log"

    def start(self) -> None:
        command = [
            BRIDGE_COMMAND, "serve",
            "--nats-url", self.nats_url,
            "--provision",
            "--no-simulate-engine",
            "--port", str(self.port),
            *self.flags,
        ]  # fmt: skip
        self.process = _spawn(command, self.log)
        wait_until_healthy(BridgeProcess(self.url, self.process, self.log))
