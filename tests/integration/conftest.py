"""A real bridge process, served by uvicorn on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import attrs
import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from adapters.nats.jetstream import JetStream
from adapters.nats.queue import NatsTaskQueue
from app.embedded import EmbeddedNats, free_port
from domain.models import RunId
from tests.integration.jetstream import TaskStream, task_queue, task_stream, unique

STARTUP_TIMEOUT_S = 20.0
CONDITION_TIMEOUT_S = 10.0
CONDITION_POLL_S = 0.05


def eventually(condition: Callable[[], bool], timeout: float = CONDITION_TIMEOUT_S) -> bool:
    """Wait for a state another process reaches on its own (no event to await across it):
    whether `condition` held within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(CONDITION_POLL_S)
    return condition()


@attrs.frozen
class BridgeProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        """SIGTERM, as an orchestrator would; the exit status. A bridge still running after the
        wait is killed, so that no test leaves one behind, and the timeout raised."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STARTUP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


MEMORY_BACKEND = ("--backend", "memory")
NOT_INHERITED = ("DAGNATS_BRIDGE_", "OTEL_")
BRIDGE_COMMAND = str(Path(sys.executable).parent / "dagnats-bridge")


def isolated_environment(**env: str) -> dict[str, str]:
    """This environment less the `DAGNATS_BRIDGE_*` settings of the shell that runs the tests,
    which would reach the process under test, and its `OTEL_*` ones, which could make it
    export spans; plus `env`."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)}
    return {**inherited, **env}


def start_bridge(tmp_path: Path, *flags: str, **env: str) -> BridgeProcess:
    """The console script with `flags` (default: the memory backend) and `DAGNATS_*` env, on a
    free port unless `DAGNATS_BRIDGE_PORT` names one, once healthy; stopped if it does not get
    there."""
    port = env.get("DAGNATS_BRIDGE_PORT") or str(free_port())
    with tempfile.NamedTemporaryFile(
        dir=tmp_path, prefix=f"bridge-{port}-", suffix=".log", delete=False
    ) as sink:  # a unique name: a bridge restarted on its port keeps the old one's log
        process = subprocess.Popen(
            [BRIDGE_COMMAND, "serve", *(flags or MEMORY_BACKEND)],
            env=isolated_environment(**{**env, "DAGNATS_BRIDGE_PORT": port}),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    bridge = BridgeProcess(f"http://127.0.0.1:{port}", process, Path(sink.name))
    try:
        wait_until_healthy(bridge)
    except BaseException:
        bridge.stop()
        raise
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


@pytest.fixture
def js(nats_client: NatsClient) -> JetStreamContext:
    return JetStream(nats_client)


@pytest.fixture
def run_id() -> RunId:
    return RunId(unique("run-"))


@pytest.fixture
def other_run() -> RunId:
    return RunId(unique("run-"))


@pytest.fixture
async def stream(js: JetStreamContext) -> AsyncIterator[TaskStream]:
    """A task stream of the test's own (a module may override `stream` with another kind)."""
    async with task_stream(js) as created:
        yield created


@pytest.fixture
async def queue(nats_client: NatsClient, stream: TaskStream) -> AsyncIterator[NatsTaskQueue]:
    async with task_queue(nats_client, stream) as created:
        yield created
