"""`dagnats-bridge conformance`: the console script against served bridges of every kind, and
against a fake that breaks the protocol, to show that the runner can fail."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.embedded import EmbeddedNats
from conformance.runner import PROPERTIES
from tests.integration.conftest import isolated_environment, start_bridge

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "dagnats-bridge")
EXAMPLES = "8"
RUN_TIMEOUT_S = 120.0


def conformance(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "conformance", "--url", url, "--examples", EXAMPLES, *args],
        env=isolated_environment(**env),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def conformance_of_a_bridge(
    tmp_path: Path, bridge_args: Sequence[str], *args: str
) -> subprocess.CompletedProcess[str]:
    """`conformance` (with `args`) against a bridge started with `bridge_args`, stopped after."""
    bridge = start_bridge(tmp_path, *bridge_args)
    try:
        return conformance(bridge.url, *args)
    finally:
        bridge.stop()


def assert_every_property_passed(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    for name in PROPERTIES:
        assert f"PASS  {name}:" in result.stdout
    assert f"{len(PROPERTIES)} passed, 0 failed" in result.stdout


def test_a_memory_bridge_with_a_token_conforms(tmp_path: Path) -> None:
    token = uuid.uuid4().hex
    bridge = start_bridge(tmp_path, DAGNATS_BRIDGE_TOKEN=token)
    try:
        with_userinfo = bridge.url.replace("http://", "http://someone:hunter2@")
        result = conformance(with_userinfo, DAGNATS_BRIDGE_TOKEN=token)
        metrics = httpx.get(f"{bridge.url}/metrics", timeout=5).text
    finally:
        bridge.stop()

    assert_every_property_passed(result)
    assert "tasks through /v1/sim/tasks" in result.stdout
    assert f"conformance of {bridge.url.replace('http://', 'http://***@')}:" in result.stdout
    assert token not in result.stdout
    assert "hunter2" not in result.stdout
    assert task_types_handed_out(metrics) == {"bad-input", "machine", "raw-json"}


def task_types_handed_out(metrics: str) -> set[str]:
    """The purposes of the conformance task types that got hand-outs: one each, however
    many examples ran."""
    return set(re.findall(r'tasks_handed_out_total\{task_type="conformance-\w+-([\w-]+)"', metrics))


def test_a_bridge_on_a_manual_clock_is_refused_at_once(tmp_path: Path) -> None:
    result = conformance_of_a_bridge(tmp_path, ["--backend", "memory", "--clock", "manual"])

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("dagnats-bridge: the target runs a manual clock: ")
    assert len(result.stderr.splitlines()) == 1


def test_an_embedded_nats_bridge_conforms(tmp_path: Path) -> None:
    result = conformance_of_a_bridge(tmp_path, ["--data-dir", str(tmp_path / "data")])

    assert_every_property_passed(result)


def test_a_bridge_without_simulator_conforms_with_tasks_published_on_nats(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    result = conformance_of_a_bridge(
        tmp_path, ["--nats-url", nats_server.url, "--provision"], "--nats-url", nats_server.url
    )

    assert_every_property_passed(result)
    assert "tasks published on TASK_QUEUES, history from WORKFLOW_HISTORY" in result.stdout


def test_a_bridge_without_simulator_cannot_be_checked_through_it(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    result = conformance_of_a_bridge(tmp_path, ["--nats-url", nats_server.url, "--provision"])

    assert result.returncode == 1
    assert result.stdout == ""
    assert "--nats-url" in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.fixture
def unfenced_bridge() -> Iterator[str]:
    """A bridge that applies every resolve of a task it knows, whatever the lease."""
    server = UnfencedServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_bridge_that_does_not_fence_stale_leases_fails(unfenced_bridge: str) -> None:
    result = conformance(unfenced_bridge, "--seed", "1")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAIL  protocol-machine:" in result.stdout
    report = result.stdout.split("FAIL  protocol-machine:", 1)[1]
    assert "ViolationError" in report
    assert "counterexample:" in report
    assert "state = ProtocolOverHttp()" in report
    assert "state.teardown()" in report
    assert "repeat with --seed 1" in result.stdout


class UnfencedState:
    """Tasks in a queue, events per run; one lock, since the server has a thread a request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queues: defaultdict[str, list[str]] = defaultdict(list)
        self.tasks: dict[str, dict[str, Any]] = {}
        self.events: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.signals: dict[str, Any] = {}


class UnfencedServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), UnfencedBridge)
        self.state = UnfencedState()


TERMINAL_EVENTS = {"complete": "step.completed", "fail": "step.failed", "continue": "step.continue"}


class UnfencedBridge(BaseHTTPRequestHandler):
    @property
    def state(self) -> UnfencedState:
        assert isinstance(self.server, UnfencedServer)
        return self.server.state

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def answer(self, status: int, value: Any = None) -> None:
        body = b"" if value is None else json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

    def do_GET(self) -> None:
        run_id = self.path.split("/")[4]
        with self.state.lock:
            self.answer(200, self.state.events[run_id])

    def do_POST(self) -> None:
        body = self.body()
        with self.state.lock:
            if self.path == "/v1/sim/tasks":
                self.enqueue(body)
            elif self.path == "/v1/tasks/poll":
                self.poll(body)
            else:
                self.resolve(self.path.split("/")[3], body)

    def enqueue(self, body: dict[str, Any]) -> None:
        task_id = f"{body['run_id']}.{body['step_id']}"
        self.state.tasks[task_id] = {"run_id": body["run_id"], "step_id": body["step_id"], "n": 0}
        self.state.tasks[task_id]["task_type"] = body["task_type"]
        self.state.queues[body["task_type"]].append(task_id)
        self.answer(201, {"task_id": task_id})

    def poll(self, body: dict[str, Any]) -> None:
        queue = self.state.queues[body["task_types"][0]]
        taken = queue[: body.get("max_tasks", 1)]
        del queue[: len(taken)]
        items = []
        for task_id in taken:
            task = self.state.tasks[task_id]
            task["n"] += 1
            self.append(task, "step.started", task["n"])
            items.append(
                {
                    "task_id": task_id,
                    "run_id": task["run_id"],
                    "step_id": task["step_id"],
                    "attempt": task["n"],
                    "lease_id": uuid.uuid4().hex,
                }
            )
        self.answer(200, items)

    def resolve(self, task_id: str, body: dict[str, Any]) -> None:
        task = self.state.tasks.get(task_id)
        action = body.get("action")
        if task is None:
            self.answer(404)
        elif action in TERMINAL_EVENTS:
            self.append(task, TERMINAL_EVENTS[action], task["n"])
            self.answer(200)
        elif action == "pause":
            self.state.queues[task["task_type"]].append(task_id)
            self.answer(200)
        elif action == "send_signal":
            self.state.signals[body["run_id"]] = body.get("data")
            self.answer(200)
        elif action == "wait_signal":
            self.answer(200, self.state.signals.get(task["run_id"]))
        else:
            self.answer(200)

    def append(self, task: dict[str, Any], kind: str, attempt: int) -> None:
        event = {"type": kind, "run_id": task["run_id"], "step_id": task["step_id"]}
        if kind != "step.continue":
            event["attempt_number"] = attempt
        self.state.events[task["run_id"]].append(event)
