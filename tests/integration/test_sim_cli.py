"""`dagnats-bridge sim`: the console script against a served bridge, as a user types it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.embedded import EmbeddedNats, free_port
from tests.integration.conftest import BridgeProcess, start_bridge

pytestmark = pytest.mark.integration

CLI = str(Path(sys.executable).parent / "dagnats-bridge")
RUN_TIMEOUT_S = 20.0
RUN_ENDED = {"workflow.completed", "workflow.failed"}


def environment(url: str, **env: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("DAGNATS_BRIDGE_")}
    return {**inherited, "DAGNATS_BRIDGE_URL": url, **env}


def sim(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "sim", *args],
        env=environment(url, **env),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def following(url: str, *args: str) -> subprocess.Popen[str]:
    """`sim events --follow ...` in the background, interruptible by SIGINT even when this
    process runs with SIGINT ignored (as a shell's background job does)."""
    return subprocess.Popen(
        [CLI, "sim", "events", "--follow", *args],
        env=environment(url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )


def json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


def take(bridge: BridgeProcess, task_type: str = "t") -> dict[str, Any]:
    (task,) = httpx.post(
        f"{bridge.url}/v1/tasks/poll", json={"task_types": [task_type], "timeout_ms": 5_000}
    ).json()
    assert isinstance(task, dict)
    return task


def complete(bridge: BridgeProcess, task: dict[str, Any]) -> None:
    answer = httpx.post(
        f"{bridge.url}/v1/tasks/{task['task_id']}/resolve",
        json={"action": "complete", "lease_id": task["lease_id"], "output": {"ok": True}},
    )
    assert answer.status_code == 200


def test_enqueue_prints_the_created_task_and_sends_the_input_byte_for_byte(
    bridge: BridgeProcess,
) -> None:
    raw_input = '{"to":  "a@b.c", "n": 1.50, "é": []}'

    enqueued = sim(bridge.url, "enqueue", "--type", "t", "--input", raw_input, "--run-id", "r1")
    other = sim(bridge.url, "enqueue", "--type", "t", "--run-id", "r2", "--step-id", "send")
    handed_out = httpx.post(
        f"{bridge.url}/v1/tasks/poll", json={"task_types": ["t"], "max_tasks": 2}
    ).text

    assert (enqueued.returncode, enqueued.stderr) == (0, "")
    assert json_lines(enqueued.stdout) == [
        {"task_id": "r1.step-1", "run_id": "r1", "step_id": "step-1"}
    ]
    assert json_lines(other.stdout) == [{"task_id": "r2.send", "run_id": "r2", "step_id": "send"}]
    assert f'"input":{raw_input}' in handed_out


def test_events_prints_each_event_of_the_run_on_a_line_and_runs_lists_the_run(
    bridge: BridgeProcess,
) -> None:
    sim(bridge.url, "enqueue", "--type", "t", "--input", "[1]", "--run-id", "r1")
    take(bridge)

    history = sim(bridge.url, "events", "r1")
    listed = sim(bridge.url, "runs")

    assert (history.returncode, history.stderr) == (0, "")
    assert [(e["type"], e["run_id"]) for e in json_lines(history.stdout)] == [
        ("step.started", "r1")
    ]
    assert (listed.returncode, listed.stderr) == (0, "")
    (run,) = json_lines(listed.stdout)
    assert (run["run_id"], run["status"], run["attempts"]) == ("r1", "running", 1)


def test_follow_until_done_prints_only_new_events_and_ends_with_the_run(
    bridge: BridgeProcess,
) -> None:
    sim(bridge.url, "enqueue", "--type", "t", "--run-id", "r1")
    task = take(bridge)
    follower = following(bridge.url, "r1", "--until-done")
    assert follower.stdout is not None
    try:
        first = json.loads(follower.stdout.readline())
        complete(bridge, task)
        rest, errors = follower.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        follower.kill()

    assert first["type"] == "step.started"
    assert [e["type"] for e in json_lines(rest)] == ["step.completed", "workflow.completed"]
    assert (follower.returncode, errors) == (0, "")


def test_follow_stops_on_ctrl_c_with_status_0_and_no_stack_trace(bridge: BridgeProcess) -> None:
    sim(bridge.url, "enqueue", "--type", "t", "--run-id", "r1")
    take(bridge)
    follower = following(bridge.url, "r1")
    assert follower.stdout is not None
    try:
        first = json.loads(follower.stdout.readline())
        follower.send_signal(signal.SIGINT)
        rest, errors = follower.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        follower.kill()

    assert first["type"] == "step.started"
    assert (follower.returncode, rest, errors) == (0, "", "")


def test_a_wrong_token_exits_1_with_unauthorized_and_no_token_is_printed(
    tmp_path: Path,
) -> None:
    token, wrong = "tok-7f3a9c", "tok-wrong-51d2"
    bridge = start_bridge(tmp_path, DAGNATS_BRIDGE_TOKEN=token)
    try:
        refused = sim(bridge.url, "events", "r1", "--token", wrong)
        anonymous = sim(bridge.url, "enqueue", "--type", "t")
        from_env = sim(bridge.url, "events", "r1", DAGNATS_BRIDGE_TOKEN=token)
    finally:
        bridge.stop()

    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr.splitlines() == ["dagnats-bridge: HTTP 401: unauthorized"]
    assert anonymous.returncode == 1
    assert "unauthorized" in anonymous.stderr
    assert (from_env.returncode, from_env.stdout, from_env.stderr) == (0, "", "")
    printed = [refused.stderr, anonymous.stderr, from_env.stderr, from_env.stdout]
    assert not any(token in text or wrong in text for text in printed)


def test_an_unreachable_bridge_exits_1_with_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = sim(url, "runs")

    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines() == [f"dagnats-bridge: cannot reach {url}: Connection refused"]


@pytest.mark.parametrize("raw_input", ["{bad", "", "NaN", "[1,]"])
def test_an_input_that_is_not_json_exits_2_with_a_clear_message(raw_input: str) -> None:
    result = sim(f"http://127.0.0.1:{free_port()}", "enqueue", "--type", "t", "--input", raw_input)

    assert (result.returncode, result.stdout) == (2, "")
    assert "argument --input: not valid JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bridge_without_the_simulator_is_named_with_the_switch_that_serves_it(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    bridge = start_bridge(tmp_path, "--nats-url", nats_server.url, "--provision")
    try:
        result = sim(bridge.url, "enqueue", "--type", "t")
    finally:
        bridge.stop()

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "dagnats-bridge: HTTP 404: Not Found "
        "(this bridge serves no simulator: serve with --simulator, or --backend memory)"
    ]
