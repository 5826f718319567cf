"""The processes under test: bridges and trivial servers on free ports, and what they cost."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import aiohttp
import attrs
import psutil

from app.embedded import free_port

STARTUP_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 15.0
MIB: Final = 1024 * 1024
ROOT: Final = Path(__file__).resolve().parent.parent
"""The checkout: `python -m bench.…` children run from here, wherever the run started."""


@attrs.frozen
class ServerProcess:
    """An HTTP server child process on a loopback port, its output in `log`."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def stats(self) -> psutil.Process:
        return psutil.Process(self.process.pid)

    def processes(self) -> list[psutil.Process]:
        """The server and its workers (`--workers`), all of which cost CPU and memory."""
        return [self.stats, *self.stats.children()]

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _spawn(command: Sequence[str], log_dir: Path, port: int, env: dict[str, str]) -> ServerProcess:
    log = log_dir / f"server-{port}.log"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DAGNATS_BRIDGE_")}
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - our own console scripts and arguments
            list(command),
            env={**inherited, **env},
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return ServerProcess(f"http://127.0.0.1:{port}", port, process, log)


def spawn_bridge(bridge: Path, nats_url: str, log_dir: Path, workers: int = 1) -> ServerProcess:
    """One bridge (the `dagnats-bridge` command `bridge`) over `nats_url`, provisioning,
    without the engine simulation's extra work, serving its port with `workers` processes."""
    port = free_port()
    command = [
        str(bridge), "serve",
        "--nats-url", nats_url,
        "--provision",
        "--no-simulate-engine",
        "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip
    return _spawn(command, log_dir, port, {})


def spawn_trivial(log_dir: Path) -> ServerProcess:
    """The trivial Litestar endpoint that measures the load generator's own ceiling."""
    port = free_port()
    command = [sys.executable, "-m", "bench.trivial", "--port", str(port)]
    return _spawn(command, log_dir, port, {})


def spawn_trivial_on_granian(log_dir: Path) -> ServerProcess:
    """The same endpoint served by Granian (one worker, uvloop), to compare the servers."""
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "granian"),
        "--interface", "asgi",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--workers", "1",
        "--loop", "uvloop",
        "--no-ws",
        "--log-level", "warning",
        "bench.trivial:app",
    ]  # fmt: skip
    return _spawn(command, log_dir, port, {})


async def wait_healthy(servers: Sequence[ServerProcess]) -> None:
    async with aiohttp.ClientSession() as session:
        for server in servers:
            await _wait_healthy(session, server)


async def _wait_healthy(session: aiohttp.ClientSession, server: ServerProcess) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited: {server.log.read_text(errors='replace')}")
        try:
            async with session.get(f"{server.url}/healthz") as response:
                if response.status == 200:  # noqa: PLR2004
                    return
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.05)  # still binding its port: there is nothing to await
    raise RuntimeError(f"{server.url} not healthy in {STARTUP_TIMEOUT_S}s: see {server.log}")


def cpu_seconds(processes: Sequence[psutil.Process]) -> float:
    """User plus system CPU time the processes have used so far."""
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system
    return total


def rss_mib(processes: Sequence[psutil.Process]) -> list[float]:
    return [process.memory_info().rss / MIB for process in processes]


def pss_mib(processes: Sequence[psutil.Process]) -> float:
    """What the processes hold together, each page they share (the interpreter's and the
    extensions' libraries) counted once: their RSS added up counts it in each."""
    return sum(process.memory_full_info().pss for process in processes) / MIB


def established_connections(servers: Sequence[ServerProcess]) -> int:
    """TCP connections the servers have accepted on their HTTP ports and still hold."""
    count = 0
    for server in servers:
        for process in server.processes():
            for connection in process.net_connections(kind="tcp"):
                if (
                    connection.laddr.port == server.port
                    and connection.status == psutil.CONN_ESTABLISHED
                ):
                    count += 1
    return count


def nats_server_process() -> psutil.Process:
    """The embedded nats-server: our only child of that name."""
    for child in psutil.Process().children():
        if child.name().startswith("nats-server"):
            return child
    raise RuntimeError("the embedded nats-server is not running")
