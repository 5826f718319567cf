"""A real bridge process, served by uvicorn on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import attrs
import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient

from app.embedded import EmbeddedNats, free_port

STARTUP_TIMEOUT_S = 20.0


@attrs.frozen
class BridgeProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        """SIGTERM, as an orchestrator would; the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STARTUP_TIMEOUT_S)


MEMORY_BACKEND = ("--backend", "memory")
BRIDGE_COMMAND = str(Path(sys.executable).parent / "dagnats-bridge")


def start_bridge(tmp_path: Path, *flags: str, **env: str) -> BridgeProcess:
    """The console script with `flags` (default: the memory backend) and `DAGNATS_*` env."""
    port = free_port()
    log = tmp_path / f"bridge-{port}.log"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DAGNATS_BRIDGE_")}
    environment = {**inherited, "DAGNATS_BRIDGE_PORT": str(port), **env}
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dagnats-bridge"),
                "serve",
                *(flags or MEMORY_BACKEND),
            ],
            env=environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    bridge = BridgeProcess(f"http://127.0.0.1:{port}", process, log)
    wait_until_healthy(bridge)
    return bridge


def wait_until_healthy(bridge: BridgeProcess) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if bridge.process.poll() is not None:
            raise RuntimeError(f"bridge exited: {bridge.log.read_text()}")
        try:
            if httpx.get(f"{bridge.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)  # the server is still binding its port: nothing to await yet
    raise RuntimeError(f"bridge did not become healthy: {bridge.log.read_text()}")


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[BridgeProcess]:
    process = start_bridge(tmp_path, DAGNATS_BRIDGE_HEARTBEAT_INTERVAL_MS="100")
    yield process
    if process.process.poll() is None:
        process.stop()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """One real nats-server (JetStream, loopback) for the test session."""
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def nats_client(nats_server: EmbeddedNats) -> AsyncIterator[NatsClient]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.drain()
