"""The bridge as a user runs it: the console script, real HTTP over loopback."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import BridgeProcess, eventually, start_bridge

pytestmark = pytest.mark.integration


def registered(bridge: BridgeProcess) -> list[str]:
    return [w["worker_id"] for w in httpx.get(f"{bridge.url}/v1/workers").json()]


def test_a_task_goes_round_trip_and_sigterm_stops_the_bridge_cleanly(
    bridge: BridgeProcess,
) -> None:
    with httpx.Client(base_url=bridge.url) as client:
        client.post("/v1/sim/tasks", json={"task_type": "t", "run_id": "r1", "input": [1]})
        (task,) = client.post("/v1/tasks/poll", json={"task_types": ["t"]}).json()
        done = client.post(f"/v1/tasks/{task['task_id']}/resolve", json={"action": "complete"})
        events = client.get("/v1/sim/runs/r1/events").json()

    status = bridge.stop()

    assert done.status_code == 200
    # The engine simulation (on with the memory backend) ends the one-step run.
    assert [e["type"] for e in events] == ["step.started", "step.completed", "workflow.completed"]
    assert status in {0, -signal.SIGTERM}
    log = bridge.log.read_text()
    assert "dagnats-bridge stopped" in log
    assert f"serving on {bridge.url}, backend memory, auth OFF" in log


def test_connect_streams_heartbeats_and_deregisters_within_moments_of_a_disconnect(
    bridge: BridgeProcess,
) -> None:
    body = {"worker_id": "w1", "task_types": ["t"], "max_tasks": 3}

    with httpx.stream("POST", f"{bridge.url}/v1/workers/connect", json=body) as stream:
        lines = stream.iter_lines()
        first = [next(lines), next(lines)]
        content_type = stream.headers["content-type"]
        while_connected = registered(bridge)

    assert first == ["event: heartbeat", "data: ok"]
    assert content_type == "text/event-stream"
    assert while_connected == ["w1"]
    assert eventually(lambda: registered(bridge) == [])


def test_a_worker_stays_registered_while_any_of_its_streams_is_open(
    bridge: BridgeProcess,
) -> None:
    body = {"worker_id": "w1", "task_types": ["t"]}
    url = f"{bridge.url}/v1/workers/connect"

    with httpx.stream("POST", url, json=body) as first:
        first_lines = first.iter_lines()  # held: a dropped line iterator closes its stream
        next(first_lines)
        with httpx.stream("POST", url, json=body) as second:
            next(second.iter_lines())
        next(first_lines)
        after_one_closed = registered(bridge)

    assert after_one_closed == ["w1"]
    assert eventually(lambda: registered(bridge) == [])


def test_a_poller_that_leaves_does_not_strand_the_task_it_would_have_taken(
    bridge: BridgeProcess,
) -> None:
    with httpx.Client(base_url=bridge.url) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.post(
                "/v1/tasks/poll",
                json={"task_types": ["t"], "timeout_ms": 30_000},
                timeout=httpx.Timeout(5, read=0.3),
            )
        client.post("/v1/sim/tasks", json={"task_type": "t", "run_id": "r1"})

        answer = client.post("/v1/tasks/poll", json={"task_types": ["t"], "timeout_ms": 5_000})

    (task,) = answer.json()
    assert task["run_id"] == "r1"


SPELLINGS_OF_V1_WORKERS = ("//v1/workers", "/v1//workers", "/%76%31/workers", "/v1%2Fworkers")


def test_with_a_token_v1_needs_it_and_the_log_never_shows_it(tmp_path: Path) -> None:
    token = "tok-7f3a9c"
    authorization = {"Authorization": f"Bearer {token}"}
    bridge = start_bridge(tmp_path, DAGNATS_BRIDGE_TOKEN=token)
    try:
        anonymous = httpx.get(f"{bridge.url}/v1/workers")
        authorised = httpx.get(f"{bridge.url}/v1/workers", headers=authorization)
        # Checked before routing: an unknown path or method tells nothing, and no spelling
        # of a /v1/ path the router accepts escapes the check.
        unknown = httpx.get(f"{bridge.url}/v1/nonexistent")
        wrong_method = httpx.post(f"{bridge.url}/v1/workers")
        spelled = {
            path: (
                httpx.get(f"{bridge.url}{path}").status_code,
                httpx.get(f"{bridge.url}{path}", headers=authorization).status_code,
            )
            for path in SPELLINGS_OF_V1_WORKERS
        }
    finally:
        bridge.stop()

    assert anonymous.status_code == 401
    assert authorised.status_code == 200
    assert (unknown.status_code, wrong_method.status_code) == (401, 401)
    assert spelled == {
        "//v1/workers": (401, 200),
        "/v1//workers": (401, 200),
        "/%76%31/workers": (401, 200),
        "/v1%2Fworkers": (401, 404),
    }
    log = bridge.log.read_text()
    assert "auth on" in log
    assert token not in log


def test_a_wait_signal_whose_client_left_stops_waiting(bridge: BridgeProcess) -> None:
    with httpx.Client(base_url=bridge.url) as client:
        client.post("/v1/sim/tasks", json={"task_type": "t", "run_id": "r1"})
        (task,) = client.post("/v1/tasks/poll", json={"task_types": ["t"]}).json()
        with pytest.raises(httpx.ReadTimeout):
            client.post(
                f"/v1/tasks/{task['task_id']}/resolve",
                json={"action": "wait_signal", "name": "never", "timeout_ms": 3_600_000},
                timeout=httpx.Timeout(5, read=0.3),
            )

    assert eventually(lambda: "abandoned: its client left" in bridge.log.read_text())
