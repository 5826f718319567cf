"""examples/: the worker and the curl walkthrough, run as a user runs them against a served
bridge with the engine simulation, judged by the history events they produce."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from app.embedded import free_port
from tests.integration.conftest import BridgeProcess, isolated_environment, start_bridge

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[2] / "examples"
DEADLINE_S = 30.0
WALKTHROUGH_TIMEOUT_S = 90.0
"""It takes 7-9 s; a loaded machine can take several times that."""
TOKEN = "tok-examples-4c1e"
RUN_ENDED = {"workflow.completed", "workflow.failed"}
SHORT_ACK_WAIT = ("--ack-wait-ms", "1000")
"""Short enough that a task of 5 s outlives it several times over unless heartbeats extend it,
and leaves a loaded machine seconds to hand the redelivery out before the first attempt ends."""
LONG_TASK = {"seconds": 5}
FAST_SIMULATION = (*SHORT_ACK_WAIT, "--sim-initial-delay-ms", "100")
SHORT_BACKOFF = ("--max-backoff", "1")
"""A worker's pauses between reconnects stay well inside DEADLINE_S."""


@attrs.frozen
class WorkerProcess:
    worker_id: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=DEADLINE_S)


def environment(url: str, token: str | None) -> dict[str, str]:
    authorised = {"DAGNATS_BRIDGE_TOKEN": token} if token else {}
    return isolated_environment(DAGNATS_BRIDGE_URL=url, **authorised)


def launch_worker(
    url: str, log_dir: Path, worker_id: str, *args: str, token: str = TOKEN
) -> WorkerProcess:
    log = log_dir / f"{worker_id}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "worker.py"), "--worker-id", worker_id, *args],
            env=environment(url, token),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return WorkerProcess(worker_id, process, log)


def start_worker(bridge: BridgeProcess, log_dir: Path, worker_id: str, *args: str) -> WorkerProcess:
    """The example worker, once its connect stream has registered it; killed if it does not get
    there, as it would otherwise try to reconnect for ever, outliving the tests."""
    worker = launch_worker(bridge.url, log_dir, worker_id, *args)
    try:
        wait_for(lambda: worker_ids(bridge) >= {worker_id}, f"{worker_id} to connect")
    except BaseException:
        worker.stop()
        raise
    return worker


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling the bridge: there is no event to await across processes


def api(bridge: BridgeProcess, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=bridge.url, headers=headers, timeout=DEADLINE_S)


def get_json(bridge: BridgeProcess, path: str, token: str | None = TOKEN) -> Any:
    with api(bridge, token) as client:
        answer = client.get(path)
    assert answer.status_code == 200, answer.text
    return answer.json()


def worker_ids(bridge: BridgeProcess, token: str | None = TOKEN) -> set[str]:
    return {worker["worker_id"] for worker in get_json(bridge, "/v1/workers", token)}


def enqueue(bridge: BridgeProcess, run_id: str, task_type: str, task_input: Any = None) -> str:
    with api(bridge, TOKEN) as client:
        answer = client.post(
            "/v1/sim/tasks", json={"task_type": task_type, "run_id": run_id, "input": task_input}
        )
    assert answer.status_code == 201, answer.text
    return run_id


def history(bridge: BridgeProcess, run_id: str, token: str | None = TOKEN) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = get_json(bridge, f"/v1/sim/runs/{run_id}/events", token)
    return events


def finished_history(bridge: BridgeProcess, run_id: str) -> list[dict[str, Any]]:
    """The run's events once the engine simulation has ended the run."""
    wait_for(lambda: any(e["type"] in RUN_ENDED for e in history(bridge, run_id)), run_id)
    return history(bridge, run_id)


def steps(events: list[dict[str, Any]]) -> list[tuple[str, int | None]]:
    return [(event["type"], event.get("attempt_number")) for event in events]


@pytest.fixture(scope="module")
def shared_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BridgeProcess]:
    process = start_bridge(
        tmp_path_factory.mktemp("bridge"),
        "--backend",
        "memory",
        *FAST_SIMULATION,
        DAGNATS_BRIDGE_TOKEN=TOKEN,
        DAGNATS_BRIDGE_HEARTBEAT_INTERVAL_MS="200",
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def worker(
    shared_bridge: BridgeProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One example worker serving every demo type, heartbeating every 0.2 s."""
    process = start_worker(
        shared_bridge, tmp_path_factory.mktemp("worker"), "w-all", "--heartbeat-every", "0.2"
    )
    yield process
    process.stop()


@pytest.fixture
def own_bridge(tmp_path: Path) -> Iterator[BridgeProcess]:
    """A bridge for one test, whose queue no other worker drains."""
    process = start_bridge(
        tmp_path, "--backend", "memory", *FAST_SIMULATION, DAGNATS_BRIDGE_TOKEN=TOKEN
    )
    yield process
    if process.process.poll() is None:
        process.stop()


def test_an_echo_task_completes_with_its_input_as_output(
    shared_bridge: BridgeProcess, worker: WorkerProcess
) -> None:
    run = enqueue(shared_bridge, "echo-1", "demo.echo", {"to": "a@b.c", "n": [1, 2]})

    events = finished_history(shared_bridge, run)

    assert steps(events) == [
        ("step.started", 1),
        ("step.completed", 1),
        ("workflow.completed", None),
    ]
    assert events[1]["payload"] == {"to": "a@b.c", "n": [1, 2]}
    assert [event["worker_id"] for event in events[:2]] == [worker.worker_id] * 2


def test_a_flaky_task_fails_retriable_on_attempt_1_and_completes_on_attempt_2(
    shared_bridge: BridgeProcess, worker: WorkerProcess
) -> None:
    run = enqueue(shared_bridge, "flaky-1", "demo.flaky")

    events = finished_history(shared_bridge, run)

    assert steps(events) == [
        ("step.started", 1),
        ("step.failed", 1),
        ("step.started", 2),
        ("step.completed", 2),
        ("workflow.completed", None),
    ]
    assert events[1]["payload"]["failure_type"] == "retriable"
    assert events[3]["payload"] == {"succeeded_on_attempt": 2}


def test_a_rejected_task_fails_its_run_without_a_retry(
    shared_bridge: BridgeProcess, worker: WorkerProcess
) -> None:
    run = enqueue(shared_bridge, "reject-1", "demo.reject", {"bad": True})

    events = finished_history(shared_bridge, run)

    assert steps(events) == [("step.started", 1), ("step.failed", 1), ("workflow.failed", None)]
    assert events[1]["payload"]["failure_type"] == "non_retriable"


def test_heartbeats_keep_a_task_longer_than_ack_wait_on_its_first_delivery(
    shared_bridge: BridgeProcess, worker: WorkerProcess
) -> None:
    run = enqueue(shared_bridge, "slow-1", "demo.slow", LONG_TASK)

    events = finished_history(shared_bridge, run)

    assert steps(events) == [
        ("step.started", 1),
        ("step.completed", 1),
        ("workflow.completed", None),
    ]
    assert events[1]["payload"] == {"slept_seconds": LONG_TASK["seconds"]}


def test_without_heartbeats_the_same_task_is_redelivered_and_its_late_result_refused(
    own_bridge: BridgeProcess, tmp_path: Path
) -> None:
    """The control for the test above: the AckWait is short enough to matter."""
    lazy = start_worker(own_bridge, tmp_path, "w-lazy", "demo.slow", "--heartbeat-every", "60")
    try:
        run = enqueue(own_bridge, "slow-2", "demo.slow", LONG_TASK)
        wait_for(lambda: "lease lost" in lazy.output(), "the first attempt's result to be refused")
    finally:
        lazy.stop()

    started = [e["attempt_number"] for e in history(own_bridge, run) if e["type"] == "step.started"]
    assert started[:2] == [1, 2]
    assert ("step.completed", 1) not in steps(history(own_bridge, run))


def test_sigterm_stops_polling_lets_the_running_task_finish_and_exits_0(
    own_bridge: BridgeProcess, tmp_path: Path
) -> None:
    worker = start_worker(own_bridge, tmp_path, "w-stop", "demo.slow", "demo.echo")
    try:
        running = enqueue(own_bridge, "slow-3", "demo.slow", {"seconds": 1.5})
        wait_for(lambda: bool(history(own_bridge, running)), "the slow task to start")
        worker.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "stopped polling" in worker.output(), "the worker to stop polling")
        late = enqueue(own_bridge, "echo-late", "demo.echo")
        status = worker.process.wait(timeout=DEADLINE_S)
    finally:
        worker.stop()

    assert status == 0, worker.output()
    assert steps(history(own_bridge, running)) == [
        ("step.started", 1),
        ("step.completed", 1),
        ("workflow.completed", None),
    ]
    assert history(own_bridge, late) == []
    wait_for(lambda: worker_ids(own_bridge) == set(), "the closed stream to deregister w-stop")
    assert "Traceback" not in worker.output()


def echo_once_connected(bridge: BridgeProcess, worker_id: str, run_id: str) -> list[dict[str, Any]]:
    wait_for(lambda: worker_ids(bridge) == {worker_id}, f"{worker_id} to connect")
    return finished_history(bridge, enqueue(bridge, run_id, "demo.echo"))


def test_the_worker_keeps_reconnecting_until_a_bridge_answers_and_after_it_crashes(
    tmp_path: Path,
) -> None:
    port = free_port()
    worker = launch_worker(
        f"http://127.0.0.1:{port}", tmp_path, "w-patient", "demo.echo", *SHORT_BACKOFF
    )
    histories = []
    try:
        wait_for(lambda: worker.output().count("connect stream:") >= 2, "retried connects")
        for life in range(2):
            bridge = start_bridge(  # as a restarted bridge comes back: on the same port
                tmp_path,
                "--backend",
                "memory",
                DAGNATS_BRIDGE_PORT=str(port),
                DAGNATS_BRIDGE_TOKEN=TOKEN,
            )
            try:
                histories.append(echo_once_connected(bridge, "w-patient", f"run-{life}"))
            finally:
                bridge.process.kill()  # a crash: the stream drops without a goodbye
                bridge.process.wait(timeout=DEADLINE_S)
    finally:
        worker.stop()

    assert [steps(events)[-1] for events in histories] == [("workflow.completed", None)] * 2
    assert worker.output().count("connected as w-patient") == 2


def test_a_stream_silent_for_longer_than_stream_timeout_is_reopened(
    own_bridge: BridgeProcess, tmp_path: Path
) -> None:
    """`own_bridge` heartbeats every 25 s: a worker told to expect one within 0.5 s reconnects."""
    impatient = start_worker(
        own_bridge, tmp_path, "w-impatient", "demo.echo", "--stream-timeout", "0.5"
    )
    try:
        wait_for(lambda: "connect stream: ReadTimeout" in impatient.output(), "a read timeout")
        wait_for(lambda: impatient.output().count("connected as") >= 2, "a second stream")
    finally:
        impatient.stop()


def test_a_worker_with_a_wrong_token_exits_1_naming_the_refusal_but_not_the_token(
    shared_bridge: BridgeProcess, tmp_path: Path
) -> None:
    wrong = "tok-wrong-93b7"
    worker = launch_worker(shared_bridge.url, tmp_path, "w-wrong", token=wrong)
    try:
        status = worker.process.wait(timeout=DEADLINE_S)
    finally:
        worker.stop()

    assert status == 1
    assert "HTTP 401: unauthorized" in worker.output()
    assert wrong not in worker.output()
    assert TOKEN not in worker.output()


def shown(run_id: str) -> str:
    """What a walkthrough run shows: its id less the walk's `walk-<pid>-` prefix."""
    return run_id.split("-", 2)[-1]


def walkthrough(bridge: BridgeProcess, token: str | None) -> subprocess.CompletedProcess[str]:
    """The script's run; in a session of its own, so that a timeout kills its background curl
    along with it."""
    if shutil.which("jq") is None:
        if os.environ.get("CI"):
            pytest.fail("examples/walkthrough.sh needs jq: install it (apt-get install jq)")
        pytest.skip("examples/walkthrough.sh needs jq")
    with subprocess.Popen(
        [str(EXAMPLES / "walkthrough.sh")],
        env=environment(bridge.url, token),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=WALKTHROUGH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"walkthrough.sh timed out:\n{stdout}{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.parametrize(
    ("clock", "token"), [("system", None), ("manual", TOKEN)], ids=["system-clock", "manual-clock"]
)
def test_the_walkthrough_answers_as_expected_and_leaves_the_runs_it_shows(
    tmp_path: Path, clock: str, token: str | None
) -> None:
    served = start_bridge(
        tmp_path,
        "--backend",
        "memory",
        "--clock",
        clock,
        **({"DAGNATS_BRIDGE_TOKEN": token} if token else {}),
    )
    try:
        walked = walkthrough(served, token)
        runs = get_json(served, "/v1/sim/runs", token)
        events = {shown(run["run_id"]): history(served, run["run_id"], token) for run in runs}
        workers = worker_ids(served, token)
    finally:
        served.stop()

    output = walked.stdout + walked.stderr
    assert walked.returncode == 0, output
    assert walked.stdout.endswith("walkthrough: every step answered as expected\n"), output
    assert {shown(run["run_id"]): run["status"] for run in runs} == {
        "complete": "completed",
        "retry": "completed",
        "retry-after": "failed",
        "pause": "completed",
        "loop": "completed",
        "approval": "completed",
        "notified": "completed",
    }
    assert steps(events["retry"]) == [
        ("step.started", 1),
        ("step.failed", 1),
        ("step.started", 2),
        ("step.completed", 2),
        ("workflow.completed", None),
    ]
    failures = [e["payload"] for e in events["retry-after"] if e["type"] == "step.failed"]
    assert [failure["failure_type"] for failure in failures] == ["retry_after", "non_retriable"]
    assert steps(events["pause"])[:2] == [("step.started", 1), ("step.started", 2)]
    assert "step.continue" in [e["type"] for e in events["loop"]]
    assert workers == set()
    if token:
        assert token not in output
