"""`--workers 2` on a real nats-server: one port, leases any worker resolves, and a SIGTERM
that drains every worker before the bridge exits."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from app.embedded import EmbeddedNats, accepts_connections, free_port
from tests.integration.conftest import (
    BRIDGE_COMMAND,
    BridgeProcess,
    eventually,
    isolated_environment,
    start_bridge,
)

pytestmark = pytest.mark.integration

TASKS = 8
PROMPTLY_S = 5.0
STOPPED_WITHIN_S = 30.0
"""The survivors drain before the bridge exits: generous on a loaded machine."""
TOKEN = "tok-workers-7d2a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def workers(tmp_path: Path, nats_server: EmbeddedNats) -> Iterator[BridgeProcess]:
    bridge = start_bridge(
        tmp_path,
        "--nats-url",
        nats_server.url,
        "--provision",
        "--simulator",
        "--no-simulate-engine",
        "--workers",
        "2",
        "--log-level",
        "DEBUG",
        DAGNATS_BRIDGE_TOKEN=TOKEN,
    )
    yield bridge
    if bridge.process.poll() is None:
        bridge.process.kill()
        bridge.process.wait()


def worker_pids(bridge: BridgeProcess) -> tuple[int, int] | None:
    """The workers' pids, once the supervisor has started them both."""
    found = re.search(r"2 workers on \S+ \(pids (\d+), (\d+)\)", bridge.log.read_text())
    return None if found is None else (int(found[1]), int(found[2]))


def started_workers(bridge: BridgeProcess) -> int:
    return bridge.log.read_text().count("Application startup complete")


def wait_until_both_started(bridge: BridgeProcess) -> None:
    """Until both serve: a stop before it tests another path (below)."""
    assert eventually(lambda: started_workers(bridge) == 2, PROMPTLY_S), bridge.log.read_text()


def polling(bridge: BridgeProcess) -> bool:
    """The poll is inside a worker (the token is logged at DEBUG on the way in)."""
    return "/v1/tasks/poll with token default" in bridge.log.read_text()


def test_tasks_polled_through_one_worker_are_resolved_through_any(
    workers: BridgeProcess, tmp_path: Path
) -> None:
    task_type = f"wk-{tmp_path.name}"
    with httpx.Client(base_url=workers.url, headers=AUTH) as client:
        for number in range(TASKS):
            enqueued = client.post(
                "/v1/sim/tasks", json={"task_type": task_type, "run_id": f"{task_type}-{number}"}
            )
            assert enqueued.status_code == 201, enqueued.text
        polled = client.post(
            "/v1/tasks/poll", json={"task_types": [task_type], "max_tasks": TASKS}
        ).json()

    # A new connection each: the kernel hands them to either worker.
    resolved = [
        httpx.post(
            f"{workers.url}/v1/tasks/{task['task_id']}/resolve",
            json={"action": "complete", "lease_id": task["lease_id"]},
            headers=AUTH,
        ).status_code
        for task in polled
    ]

    assert len(polled) == TASKS
    assert resolved == [200] * TASKS


def test_sigterm_drains_every_worker_then_the_bridge_exits_cleanly(
    workers: BridgeProcess, tmp_path: Path
) -> None:
    wait_until_both_started(workers)
    body = {"task_types": [f"idle-{tmp_path.name}"], "timeout_ms": 30_000}

    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(
            httpx.post, f"{workers.url}/v1/tasks/poll", json=body, headers=AUTH, timeout=40
        )
        assert eventually(lambda: polling(workers), PROMPTLY_S)
        started = time.monotonic()
        workers.process.send_signal(signal.SIGTERM)
        answer = waiting.result(timeout=PROMPTLY_S)
    status = workers.process.wait(timeout=STOPPED_WITHIN_S)

    assert started_workers(workers) == 2
    assert answer.status_code == 200
    assert answer.json() == []
    assert time.monotonic() - started < PROMPTLY_S
    assert status == 0
    assert workers.log.read_text().count("drained: no request in flight") == 2


def test_a_worker_that_dies_stops_the_others_and_the_bridge_exits_with_1(
    workers: BridgeProcess,
) -> None:
    pids = worker_pids(workers)
    assert pids is not None
    first, second = pids

    os.kill(first, signal.SIGKILL)
    status = workers.process.wait(timeout=STOPPED_WITHIN_S)

    assert status == 1
    assert f"worker {first} ended with status -9" in workers.log.read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)


def test_a_stop_that_comes_while_a_worker_starts_is_acted_on_once_it_serves(
    tmp_path: Path,
) -> None:
    """A worker starts with SIGTERM blocked (as the supervisor starts it), and the signal
    comes before it could note it: it serves, then drains and exits 0, not killed by it."""
    port = str(free_port())
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [BRIDGE_COMMAND, "serve", "--backend", "memory"],
            env=isolated_environment(DAGNATS_BRIDGE_PORT=port),
            stdout=sink,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM}),  # noqa: PLW1509
        )
    try:
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=STOPPED_WITHIN_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert status == 0
    assert "stopped by SIGTERM" in log.read_text()
    assert "drained: no request in flight" in log.read_text()


def test_workers_drain_and_exit_when_the_supervisor_is_killed(workers: BridgeProcess) -> None:
    wait_until_both_started(workers)
    pids = worker_pids(workers)
    assert pids is not None

    workers.process.kill()
    workers.process.wait()

    try:
        assert eventually(lambda: not any(map(running, pids)), STOPPED_WITHIN_S)
    finally:
        for pid in filter(running, pids):
            os.kill(pid, signal.SIGKILL)
    assert workers.log.read_text().count("drained: no request in flight") == 2


def running(pid: int) -> bool:
    """Neither gone nor a zombie (an orphan's exit is reaped by whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_supervisor_stops_the_embedded_nats_server_with_sigterm(tmp_path: Path) -> None:
    """Without --nats-url the command line starts nats-server, then execs into the
    supervisor, which now owns it: a SIGTERM to the bridge ends the workers and the server,
    which shuts down on a SIGTERM of its own (not killed along with its parent)."""
    bridge = start_bridge(
        tmp_path,
        *("--data-dir", str(tmp_path / "data"), "--no-simulate-engine", "--workers", "2"),
    )
    try:
        found = re.search(
            r"embedded nats-server nats://([\d.]+):(\d+) ready", bridge.log.read_text()
        )
        assert found is not None
        host, port = found[1], int(found[2])
        assert accepts_connections(host, port)
        wait_until_both_started(bridge)

        bridge.process.send_signal(signal.SIGTERM)
        status = bridge.process.wait(timeout=STOPPED_WITHIN_S)
    finally:
        bridge.stop()

    assert status == 0
    assert not accepts_connections(host, port)
    assert "the embedded nats-server ended" not in bridge.log.read_text()
    assert 'Trapped "terminated" signal' in (tmp_path / "data" / "nats-server.log").read_text()
