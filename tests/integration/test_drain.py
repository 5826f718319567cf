"""SIGTERM drains a real bridge process: waiting polls and wait_signals answer, new polls and
connects get 503, resolves still work, connect streams end with `event: shutdown`, /readyz
fails for at least --drain-min-seconds, and leases are released only where nothing else
could resolve them."""

from __future__ import annotations

import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.embedded import EmbeddedNats
from tests.integration.conftest import BridgeProcess, start_bridge

pytestmark = pytest.mark.integration

TOKEN = "tok-drain-5c1e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONDITION_TIMEOUT_S = 10.0
PROMPTLY_S = 10.0
"""Bounds for what must happen well before the grace ends, loose enough for a loaded CI."""


def eventually(condition: Callable[[], bool]) -> bool:
    """Wait for a state the bridge process reaches on its own (no event to await across it)."""
    deadline = time.monotonic() + CONDITION_TIMEOUT_S
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


Starter = Callable[..., BridgeProcess]


@pytest.fixture
def drained_bridge(tmp_path: Path) -> Iterator[Starter]:
    """Starts bridges with auth, which log each request's token name at DEBUG (the sign that
    a request is inside the app); kills what a failed test left running."""
    started: list[BridgeProcess] = []

    def start(*flags: str, drain_seconds: int) -> BridgeProcess:
        bridge = start_bridge(
            tmp_path,
            *flags,
            "--drain-seconds",
            str(drain_seconds),
            "--log-level",
            "DEBUG",
            DAGNATS_BRIDGE_TOKEN=TOKEN,
            DAGNATS_BRIDGE_HEARTBEAT_INTERVAL_MS="60000",
        )
        started.append(bridge)
        return bridge

    yield start
    for bridge in started:
        if bridge.process.poll() is None:
            bridge.process.kill()
            bridge.process.wait()


def take_a_task(client: httpx.Client, task_type: str) -> dict[str, object]:
    created = client.post("/v1/sim/tasks", json={"task_type": task_type, "run_id": task_type})
    assert created.status_code == 201, created.text
    (task,) = client.post("/v1/tasks/poll", json={"task_types": [task_type]}).json()
    return dict(task)


def waiting_for_a_signal(
    pool: ThreadPoolExecutor, client: httpx.Client, task: dict[str, object]
) -> Future[httpx.Response]:
    """A resolve that stays in flight until the run's signal `go` comes, or the drain."""
    body = {"action": "wait_signal", "name": "go", "timeout_ms": 60_000}
    return pool.submit(client.post, f"/v1/tasks/{task['task_id']}/resolve", json=body)


def slowly_completing(
    pool: ThreadPoolExecutor, client: httpx.Client, task: dict[str, object], done: threading.Event
) -> Future[httpx.Response]:
    """A `complete` resolve whose body is uploaded half, then the rest once `done` is set: a
    request that stays in flight as long as the test wants, the drain or not."""

    def body() -> Iterator[bytes]:
        yield b'{"action": '
        done.wait()
        yield b'"complete"}'

    return pool.submit(client.post, f"/v1/tasks/{task['task_id']}/resolve", content=body())


def cut(answer: Future[httpx.Response], bridge: BridgeProcess) -> bool:
    """A request cut by the shutdown: answered 503 problem+json (or, as the client was still
    sending its body, its connection gone before it read that), logged as cut, not as an
    error of the app with its stack trace."""
    log = bridge.log.read_text()
    if "cut: the drain's grace ended before it was answered" not in log or "Traceback" in log:
        return False
    try:
        response = answer.result(timeout=PROMPTLY_S)
    except httpx.TransportError:
        return True
    assert_draining(response)
    return True


def arrived(bridge: BridgeProcess, request_line: str, times: int = 1) -> bool:
    return bridge.log.read_text().count(f"{request_line} with token default") >= times


def assert_draining(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"


def test_sigterm_answers_waiting_polls_refuses_new_ones_and_serves_resolves_until_done(
    drained_bridge: Starter, pool: ThreadPoolExecutor
) -> None:
    bridge = drained_bridge("--backend", "memory", drain_seconds=60)
    upload_done = threading.Event()
    with httpx.Client(base_url=bridge.url, headers=AUTH, timeout=PROMPTLY_S) as client:
        take_a_task(client, "kept")
        signalled = take_a_task(client, "signalled")
        signal_waiting = waiting_for_a_signal(pool, client, signalled)
        completing = slowly_completing(pool, client, take_a_task(client, "held"), upload_done)
        waiting = pool.submit(
            client.post, "/v1/tasks/poll", json={"task_types": ["idle"], "timeout_ms": 30_000}
        )
        connect = {"worker_id": "w1", "task_types": ["held"]}
        with client.stream("POST", "/v1/workers/connect", json=connect) as stream:
            assert eventually(lambda: arrived(bridge, "POST /v1/tasks/poll", times=4))
            assert eventually(lambda: arrived(bridge, "POST /v1/tasks/signalled.step-1/resolve"))
            assert eventually(lambda: arrived(bridge, "POST /v1/tasks/held.step-1/resolve"))
            sigterm_at = time.monotonic()

            bridge.process.send_signal(signal.SIGTERM)

            answer = waiting.result(timeout=PROMPTLY_S)
            signal_answer = signal_waiting.result(timeout=PROMPTLY_S)
            answered_after = time.monotonic() - sigterm_at
            streamed = list(stream.iter_lines())
        refused = client.post("/v1/tasks/poll", json={"task_types": ["held"]})
        connect_refused = client.post("/v1/workers/connect", json=connect)
        readiness = client.get("/readyz")
        resolved = client.post(
            f"/v1/tasks/{signalled['task_id']}/resolve", json={"action": "complete"}
        )
        alive_while_uploading = bridge.process.poll() is None
        upload_done.set()
        completed = completing.result(timeout=PROMPTLY_S)
    status = bridge.process.wait(timeout=PROMPTLY_S)
    exited_after = time.monotonic() - sigterm_at

    # A poll waiting when the drain began answers what it holds; the drain may also come
    # just before the poll passed the door (after its arrival was logged): then it is refused.
    assert (answer.status_code, answer.text) == (200, "[]") or answer.status_code == 503
    assert answered_after < PROMPTLY_S
    assert_draining(signal_answer)
    assert streamed == ["event: shutdown", "data: draining", ""]
    for response in (refused, connect_refused, readiness):
        assert_draining(response)
    assert resolved.status_code == 200
    assert alive_while_uploading
    assert completed.status_code == 200, completed.text
    assert status == 0
    assert exited_after < PROMPTLY_S  # the grace is 60 s: the drain ended with the requests
    log = bridge.log.read_text()
    assert "draining for up to 60 s: 4 request(s) in flight" in log
    assert "wait_signal on /v1/tasks/signalled.step-1/resolve ended by the drain" in log
    assert "drained: no request in flight" in log
    # The kept task was never resolved, and its lease lived only in this process.
    assert "released 1 task(s) left unsettled" in log
    assert TOKEN not in log


def test_the_grace_period_cuts_what_is_still_in_flight_and_releases_memory_leases(
    drained_bridge: Starter, pool: ThreadPoolExecutor
) -> None:
    bridge = drained_bridge("--backend", "memory", drain_seconds=1)
    upload_done = threading.Event()
    with httpx.Client(base_url=bridge.url, headers=AUTH, timeout=PROMPTLY_S) as client:
        take_a_task(client, "kept")
        completing = slowly_completing(pool, client, take_a_task(client, "held"), upload_done)
        assert eventually(lambda: arrived(bridge, "POST /v1/tasks/held.step-1/resolve"))
        sigterm_at = time.monotonic()

        bridge.process.send_signal(signal.SIGTERM)
        status = bridge.process.wait(timeout=PROMPTLY_S)
        exited_after = time.monotonic() - sigterm_at
        upload_done.set()
        assert cut(completing, bridge)

    assert status == 0
    assert exited_after < 1 + PROMPTLY_S
    log = bridge.log.read_text()
    assert "grace over: 1 request(s) still in flight are cut" in log
    assert "released 2 task(s) left unsettled" in log


def test_a_second_sigterm_ends_the_grace_period_at_once(
    drained_bridge: Starter, pool: ThreadPoolExecutor
) -> None:
    bridge = drained_bridge("--backend", "memory", drain_seconds=60)
    upload_done = threading.Event()
    with httpx.Client(base_url=bridge.url, headers=AUTH, timeout=PROMPTLY_S) as client:
        completing = slowly_completing(pool, client, take_a_task(client, "held"), upload_done)
        assert eventually(lambda: arrived(bridge, "POST /v1/tasks/held.step-1/resolve"))
        bridge.process.send_signal(signal.SIGTERM)
        assert eventually(lambda: "draining for up to 60 s" in bridge.log.read_text())

        bridge.process.send_signal(signal.SIGTERM)
        status = bridge.process.wait(timeout=PROMPTLY_S)
        upload_done.set()
        assert cut(completing, bridge)

    assert status == 0
    assert "stopping now: a second stop signal came" in bridge.log.read_text()


def test_with_a_minimum_readyz_fails_that_long_before_the_stop_even_with_nothing_in_flight(
    drained_bridge: Starter,
) -> None:
    bridge = drained_bridge("--backend", "memory", "--drain-min-seconds", "2", drain_seconds=30)
    sigterm_at = time.monotonic()

    bridge.process.send_signal(signal.SIGTERM)
    assert eventually(lambda: "draining for up to 30 s" in bridge.log.read_text())
    readiness = httpx.get(f"{bridge.url}/readyz")
    status = bridge.process.wait(timeout=2 + PROMPTLY_S)
    exited_after = time.monotonic() - sigterm_at

    assert_draining(readiness)
    assert status == 0
    assert 2 <= exited_after < 2 + PROMPTLY_S
    log = bridge.log.read_text()
    assert "not ready for at least 2 s before the stop" in log
    assert "drained: no request in flight" in log


def test_leases_in_nats_are_left_to_another_replica_which_resolves_them(
    drained_bridge: Starter, nats_server: EmbeddedNats
) -> None:
    on_nats = ("--nats-url", nats_server.url, "--provision", "--simulator")
    first = drained_bridge(*on_nats, drain_seconds=60)
    second = drained_bridge(*on_nats, drain_seconds=60)
    task_type = f"drain{uuid.uuid4().hex[:10]}"
    with httpx.Client(base_url=first.url, headers=AUTH) as client:
        held = take_a_task(client, task_type)
    sigterm_at = time.monotonic()

    first.process.send_signal(signal.SIGTERM)
    status = first.process.wait(timeout=PROMPTLY_S)
    exited_after = time.monotonic() - sigterm_at
    with httpx.Client(base_url=second.url, headers=AUTH) as client:
        resolved = client.post(
            f"/v1/tasks/{held['task_id']}/resolve",
            json={"action": "complete", "lease_id": held["lease_id"]},
        )
    second.stop()

    assert status == 0
    assert exited_after < PROMPTLY_S
    assert "released" not in first.log.read_text()
    assert resolved.status_code == 200
    assert resolved.headers.get("x-dagnats-replayed") is None
