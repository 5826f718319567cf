"""The bridge on real NATS, as operators run it: wire facts, replicas, crashes, NATS restarts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient

from adapters.wire import consumer_name, task_subject
from app.embedded import EmbeddedNats, accepts_connections
from domain.protocol import MAX_NAME_BYTES, MAX_TASK_ID_BYTES
from tests.integration.conftest import (
    CONDITION_TIMEOUT_S,
    BridgeProcess,
    eventually,
    start_bridge,
)

pytestmark = pytest.mark.integration


def on_nats(tmp_path: Path, url: str, **env: str) -> BridgeProcess:
    return start_bridge(tmp_path, "--nats-url", url, "--provision", "--simulator", **env)


@pytest.fixture
def bridge(tmp_path: Path, nats_server: EmbeddedNats) -> Iterator[BridgeProcess]:
    process = on_nats(tmp_path, nats_server.url, DAGNATS_BRIDGE_HEARTBEAT_INTERVAL_MS="200")
    yield process
    if process.process.poll() is None:
        process.stop()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def enqueue(url: str, task_type: str, run_id: str, **fields: Any) -> None:
    body = {"task_type": task_type, "run_id": run_id, **fields}
    response = httpx.post(f"{url}/v1/sim/tasks", json=body)
    assert response.status_code == 201, response.text


def poll(url: str, task_type: str, timeout_ms: int = 5_000, **fields: Any) -> list[dict[str, Any]]:
    body = {"task_types": [task_type], "timeout_ms": timeout_ms, **fields}
    response = httpx.post(f"{url}/v1/tasks/poll", json=body, timeout=timeout_ms / 1000 + 5)
    assert response.status_code == 200, response.text
    tasks: list[dict[str, Any]] = response.json()
    return tasks


def resolve(url: str, task_id: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{url}/v1/tasks/{task_id}/resolve", json=body, timeout=15)


def events(url: str, run_id: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = httpx.get(f"{url}/v1/sim/runs/{run_id}/events").json()
    return listed


def test_the_embedded_default_serves_a_whole_task_and_stops_its_nats_server(
    tmp_path: Path,
) -> None:
    bridge = start_bridge(tmp_path, "--data-dir", str(tmp_path / "data"))
    task_type, run_id = unique("t"), unique("r")

    enqueue(bridge.url, task_type, run_id, input={"n": 1})
    (task,) = poll(bridge.url, task_type)
    done = resolve(bridge.url, task["task_id"], action="complete", output={"ok": True})
    history = events(bridge.url, run_id)
    log_before_stop = bridge.log.read_text()
    bridge.stop()

    assert done.status_code == 200
    assert [(e["type"], e.get("attempt_number")) for e in history] == [
        ("step.started", 1),
        ("step.completed", 1),
        ("workflow.completed", None),  # the engine simulation is on in the embedded mode
    ]
    assert history[1]["payload"] == {"ok": True}
    nats_url = log_before_stop.split("backend nats at ", 1)[1].split(",", 1)[0]
    assert nats_url.startswith("nats://127.0.0.1:")
    port = int(nats_url.rsplit(":", 1)[1])
    assert eventually(lambda: not accepts_connections("127.0.0.1", port))


def test_a_bridge_killed_with_sigkill_takes_its_embedded_nats_server_with_it(
    tmp_path: Path,
) -> None:
    bridge = start_bridge(tmp_path, "--data-dir", str(tmp_path / "data"))
    log = bridge.log.read_text()
    port = int(log.split("backend nats at nats://127.0.0.1:", 1)[1].split(",", 1)[0])

    bridge.process.send_signal(signal.SIGKILL)
    bridge.process.wait()

    assert eventually(lambda: not accepts_connections("127.0.0.1", port))


def test_the_engine_simulation_retries_and_completes_a_run_on_an_external_nats(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    bridge = on_nats(
        tmp_path,
        nats_server.url,
        DAGNATS_BRIDGE_SIMULATE_ENGINE="yes",
        DAGNATS_BRIDGE_SIM_INITIAL_DELAY_MS="100",
    )
    task_type, run_id = unique("t"), unique("r")
    try:
        enqueue(bridge.url, task_type, run_id, input={"n": 1})
        (first,) = poll(bridge.url, task_type)
        failed = resolve(bridge.url, first["task_id"], action="fail", error="flaky")
        # The long poll wakes when the simulated engine re-publishes the task, 100 ms on.
        (second,) = poll(bridge.url, task_type)
        done = resolve(bridge.url, second["task_id"], action="complete")
        runs = {r["run_id"]: r for r in httpx.get(f"{bridge.url}/v1/sim/runs").json()}
        history = events(bridge.url, run_id)
    finally:
        bridge.stop()

    assert (failed.status_code, done.status_code) == (200, 200)
    assert (second["task_id"], second["attempt"], second["input"]) == (
        first["task_id"],
        2,
        {"n": 1},
    )
    assert [(e["type"], e.get("attempt_number")) for e in history] == [
        ("step.started", 1),
        ("step.failed", 1),
        ("step.started", 2),
        ("step.completed", 2),
        ("workflow.completed", None),
    ]
    assert (runs[run_id]["status"], runs[run_id]["attempts"]) == ("completed", 2)


def test_a_task_polled_through_one_bridge_is_resolved_through_another(
    tmp_path: Path, nats_server: EmbeddedNats, bridge: BridgeProcess
) -> None:
    other = on_nats(tmp_path, nats_server.url)
    task_type, run_id = unique("t"), unique("r")
    try:
        enqueue(bridge.url, task_type, run_id)
        (task,) = poll(bridge.url, task_type)
        heartbeat = resolve(other.url, task["task_id"], action="heartbeat")
        done = resolve(other.url, task["task_id"], action="complete", lease_id=task["lease_id"])
        # The first bridge last knew the lease active: it must find out it is settled.
        refused = resolve(bridge.url, task["task_id"], action="fail", lease_id=task["lease_id"])
        replay = resolve(bridge.url, task["task_id"], action="complete")
    finally:
        other.stop()

    assert (heartbeat.status_code, done.status_code, replay.status_code) == (200, 200, 200)
    assert refused.status_code == 409
    assert replay.headers["x-dagnats-replayed"] == "true"
    assert [e["type"] for e in events(bridge.url, run_id)] == ["step.started", "step.completed"]
    assert poll(bridge.url, task_type, timeout_ms=200) == []


def test_a_bridge_killed_and_restarted_still_resolves_the_task_it_handed_out(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    first = on_nats(tmp_path, nats_server.url)
    task_type, run_id = unique("t"), unique("r")
    enqueue(first.url, task_type, run_id)
    (task,) = poll(first.url, task_type)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()

    second = on_nats(tmp_path, nats_server.url)
    try:
        done = resolve(second.url, task["task_id"], action="fail", error="boom")
        history = events(second.url, run_id)
    finally:
        second.stop()

    assert done.status_code == 200
    assert history[-1]["type"] == "step.failed"
    assert history[-1]["payload"] == {"error": "boom", "failure_type": "retriable"}


async def test_checkpoints_and_signals_are_stored_byte_exact_under_the_engine_keys(
    bridge: BridgeProcess, nats_client: NatsClient
) -> None:
    task_type, run_id = unique("t"), unique("r")
    enqueue(bridge.url, task_type, run_id)
    (task,) = poll(bridge.url, task_type)
    resolve_url = f"{bridge.url}/v1/tasks/{task['task_id']}/resolve"
    signal_body = {"action": "send_signal", "run_id": run_id, "name": "go", "data": "abc"}

    async with httpx.AsyncClient() as http:
        for body in (b'{"action":"checkpoint","data":{"progress": 50}}', json.dumps(signal_body)):
            assert (await http.post(resolve_url, content=body)).status_code == 200
    js = nats_client.jetstream()
    checkpoint = await (await js.key_value("checkpoints")).get(task["task_id"])
    signal_value = await (await js.key_value("signals")).get(f"{run_id}.go")
    waited = resolve(bridge.url, task["task_id"], action="wait_signal", name="go", timeout_ms=1000)

    assert checkpoint.value == b'{"progress": 50}'
    assert signal_value.value == b'"abc"'
    assert waited.content == b'"abc"'


async def test_stream_chunks_go_out_on_core_nats(
    bridge: BridgeProcess, nats_client: NatsClient
) -> None:
    task_type, run_id = unique("t"), unique("r")
    enqueue(bridge.url, task_type, run_id, step_id="s1")
    (task,) = poll(bridge.url, task_type)
    subscription = await nats_client.subscribe(f"stream.{run_id}.s1")
    await nats_client.flush()

    response = resolve(bridge.url, task["task_id"], action="stream", data={"tok": "hi"})
    message = await subscription.next_msg(timeout=5)

    assert response.status_code == 200
    assert json.loads(message.data) == {"tok": "hi"}


async def test_the_workers_entry_is_the_native_json_and_is_deleted_on_disconnect(
    bridge: BridgeProcess, nats_client: NatsClient
) -> None:
    worker_id = unique("w")
    workers = await nats_client.jetstream().key_value("workers")
    body = {"worker_id": worker_id, "task_types": ["a.b"], "max_tasks": 4}

    with httpx.stream("POST", f"{bridge.url}/v1/workers/connect", json=body) as stream:
        lines = stream.iter_lines()
        next(lines)
        stored = (await workers.get(worker_id)).value
        entry = json.loads(stored or b"null")

    assert {k: v for k, v in entry.items() if k != "last_seen"} == {
        "worker_id": worker_id,
        "task_types": ["a.b"],
        "language": "http",
        "transport": "bridge",
        "max_tasks": 4,
    }
    assert entry["last_seen"].endswith("Z")

    async def gone() -> bool:
        try:
            await workers.get(worker_id)
        except nats.js.errors.KeyNotFoundError:
            return True
        return False

    deadline = time.monotonic() + CONDITION_TIMEOUT_S
    while not await gone() and time.monotonic() < deadline:
        await nats_client.flush()
    assert await gone()


def test_while_nats_is_away_the_bridge_answers_503_and_resumes_when_it_is_back(
    tmp_path: Path,
) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    bridge = on_nats(tmp_path, server.url)
    task_type, held_run = unique("t"), unique("r")
    try:
        enqueue(bridge.url, task_type, held_run)
        (held,) = poll(bridge.url, task_type)
        server.stop()

        resolve_while_away = resolve(bridge.url, held["task_id"], action="heartbeat")

        started = time.monotonic()
        away = httpx.post(
            f"{bridge.url}/v1/tasks/poll",
            json={"task_types": [task_type], "timeout_ms": 2_000},
            timeout=30,
        )
        took = time.monotonic() - started
        ready_while_away = httpx.get(f"{bridge.url}/readyz")

        server = EmbeddedNats(tmp_path / "nats", port=server.port)
        server.start()
        back = eventually(lambda: httpx.get(f"{bridge.url}/readyz").status_code == 200)
        run_id = unique("r")
        enqueue(bridge.url, task_type, run_id)
        tasks = poll(bridge.url, task_type)
    finally:
        bridge.stop()
        server.stop()

    assert away.status_code == 503, away.text
    assert away.headers["retry-after"]
    assert took < 2 + 5
    assert ready_while_away.status_code == 503
    assert resolve_while_away.status_code == 503
    assert back
    assert [t["run_id"] for t in tasks] == [run_id]


async def test_a_poll_waiting_when_nats_goes_away_answers_within_its_budget(
    tmp_path: Path,
) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    bridge = on_nats(tmp_path, server.url)
    task_type = unique("t")
    observer = await nats.connect(server.url)
    try:
        async with httpx.AsyncClient(base_url=bridge.url, timeout=30) as http:
            body = {"task_types": [task_type], "timeout_ms": 3_000}
            polling = asyncio.ensure_future(http.post("/v1/tasks/poll", json=body))
            await _until_the_bridge_waits_on(observer, task_type)
            await observer.close()
            started = time.monotonic()
            server.kill()

            answer = await polling
            took = time.monotonic() - started
    finally:
        bridge.stop()
        server.stop()

    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"]
    assert took < 3 + 5


async def _until_the_bridge_waits_on(observer: NatsClient, task_type: str) -> None:
    """The bridge's long poll is a pull request the server holds: wait until it is there."""
    js = observer.jetstream()
    deadline = time.monotonic() + CONDITION_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(nats.js.errors.NotFoundError):
            info = await js.consumer_info("TASK_QUEUES", consumer_name(task_type))
            if info.num_waiting:
                return
        await observer.flush()
    raise AssertionError("the bridge never waited on the task type")


def test_an_output_too_large_for_nats_is_413_and_leaves_the_task_open(
    bridge: BridgeProcess,
) -> None:
    task_type, run_id = unique("t"), unique("r")
    enqueue(bridge.url, task_type, run_id)
    (task,) = poll(bridge.url, task_type)
    huge = "x" * (1_048_576 - 64)

    too_large = resolve(bridge.url, task["task_id"], action="complete", output=huge)
    completed = resolve(bridge.url, task["task_id"], action="complete", output="small")

    assert too_large.status_code == 413, too_large.text
    assert completed.status_code == 200
    assert events(bridge.url, run_id)[-1]["payload"] == "small"
    # The client's mistake, not a fault of the bridge: no warning with a cause.
    log = bridge.log.read_text()
    assert f"resolve {task['task_id']} complete: invalid" in log
    assert "PayloadTooLargeError" not in log


MAX_PAYLOAD = 1_048_576
"""nats-server's default max_payload, and the bridge's default --max-body-bytes."""


@pytest.mark.parametrize(
    ("action", "field", "overhead"), [("stream", "data", 40), ("complete", "output", 200)]
)
def test_a_value_that_fits_max_payload_but_not_with_its_headers_is_413_and_nats_stays(
    bridge: BridgeProcess, action: str, field: str, overhead: int
) -> None:
    """nats-py weighs only the payload; the server, also the headers (the event's msg-id, the
    chunk's trace context), and answers -ERR, upon which nats-py closes the connection for
    good: every request answered 503 from then on."""
    task_type, run_id = unique("t"), unique("r")
    enqueue(bridge.url, task_type, run_id)
    (task,) = poll(bridge.url, task_type)
    value = b'"' + b"x" * (MAX_PAYLOAD - overhead - 2) + b'"'
    body = b'{"action":"%s","%s":%s}' % (action.encode(), field.encode(), value)
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    too_large = httpx.post(
        f"{bridge.url}/v1/tasks/{task['task_id']}/resolve",
        content=body,
        headers={"traceparent": traceparent},
        timeout=15,
    )
    ready = httpx.get(f"{bridge.url}/readyz", timeout=5)
    completed = resolve(bridge.url, task["task_id"], action="complete", output="small")

    assert len(body) <= MAX_PAYLOAD  # within --max-body-bytes: the bridge reads it
    assert (too_large.status_code, ready.status_code, completed.status_code) == (413, 200, 200)
    assert "NATS disconnected" not in bridge.log.read_text()


def test_a_connected_worker_is_capped_and_its_tasks_come_back_at_once_when_it_leaves(
    bridge: BridgeProcess,
) -> None:
    task_type, worker_id = unique("t"), unique("w")
    runs = [unique("r1-"), unique("r2-"), unique("r3-")]
    for run_id in runs:
        enqueue(bridge.url, task_type, run_id)
    body = {"worker_id": worker_id, "task_types": [task_type], "max_tasks": 2}

    with httpx.stream("POST", f"{bridge.url}/v1/workers/connect", json=body) as stream:
        assert stream.status_code == 200  # registered before the stream opens
        capped = poll(bridge.url, task_type, max_tasks=5, worker_id=worker_id)
        started = time.monotonic()
        at_cap = poll(bridge.url, task_type, timeout_ms=20_000, max_tasks=5, worker_id=worker_id)
        at_cap_took = time.monotonic() - started
        (third,) = poll(bridge.url, task_type, max_tasks=5)
    released: list[dict[str, Any]] = []
    started = time.monotonic()
    while len(released) < 2 and time.monotonic() - started < CONDITION_TIMEOUT_S:
        released += poll(bridge.url, task_type, timeout_ms=1_000, max_tasks=5)
    release_took = time.monotonic() - started

    assert [t["run_id"] for t in capped] == runs[:2]
    assert at_cap == []
    assert at_cap_took < 5
    assert third["run_id"] == runs[2]
    assert sorted((t["run_id"], t["attempt"]) for t in released) == [(runs[0], 2), (runs[1], 2)]
    assert release_took < CONDITION_TIMEOUT_S  # AckWait is 5 minutes
    assert f"released 2 task(s) of worker {worker_id}" in bridge.log.read_text()
    history = events(bridge.url, runs[0])
    assert [(e["type"], e.get("worker_id")) for e in history] == [
        ("step.started", worker_id),
        ("step.started", None),
    ]
    stale = resolve(
        bridge.url, capped[0]["task_id"], action="complete", lease_id=capped[0]["lease_id"]
    )
    assert stale.status_code == 409


def test_a_poll_repeated_on_another_bridge_answers_the_same_tasks_and_leases(
    tmp_path: Path, nats_server: EmbeddedNats, bridge: BridgeProcess
) -> None:
    other = on_nats(tmp_path, nats_server.url)
    task_type, poll_id = unique("t"), unique("poll-")
    runs = [unique("r1-"), unique("r2-")]
    try:
        for run_id in runs:
            enqueue(bridge.url, task_type, run_id, input={"run": run_id})
        first = poll(bridge.url, task_type, max_tasks=1, poll_id=poll_id)
        repeat = poll(other.url, task_type, max_tasks=1, poll_id=poll_id)
        rest = poll(other.url, task_type, max_tasks=5, timeout_ms=1_000)
        done = resolve(
            other.url, first[0]["task_id"], action="complete", lease_id=first[0]["lease_id"]
        )
        after_settled = poll(other.url, task_type, max_tasks=1, poll_id=poll_id, timeout_ms=1_000)
    finally:
        other.stop()

    assert repeat == first
    assert [(t["run_id"], t["input"]) for t in first] == [(runs[0], {"run": runs[0]})]
    assert [(t["run_id"], t["attempt"]) for t in rest] == [(runs[1], 1)]
    assert done.status_code == 200
    assert after_settled == []
    assert [e["type"] for e in events(bridge.url, runs[0])] == ["step.started", "step.completed"]


def test_the_longest_names_are_stored_on_nats_and_longer_ones_leave_the_connection_up(
    bridge: BridgeProcess,
) -> None:
    """Names make subjects: one near 4 KB has the NATS server close the bridge's connection,
    and every request fails until it reconnects."""
    task_type, longest = unique("t"), "n" * MAX_NAME_BYTES
    run_id = unique("r") + "r" * (MAX_NAME_BYTES - 11)
    enqueue(bridge.url, task_type, run_id, step_id=longest)
    (task,) = poll(bridge.url, task_type, worker_id=longest)
    signal = {"action": "send_signal", "run_id": run_id, "name": longest, "data": 1}
    over = "n" * 5_000

    signalled = resolve(bridge.url, task["task_id"], **signal)
    refused = [
        resolve(bridge.url, task["task_id"], **{**signal, "name": over}),
        httpx.post(
            f"{bridge.url}/v1/tasks/poll", json={"task_types": [task_type], "worker_id": over}
        ),
        httpx.get(f"{bridge.url}/v1/tasks/{over}/checkpoint"),
    ]
    waited = resolve(
        bridge.url, task["task_id"], action="wait_signal", name=longest, timeout_ms=1_000
    )
    completed = resolve(bridge.url, task["task_id"], action="complete")

    assert (signalled.status_code, waited.content, completed.status_code) == (200, b"1", 200)
    assert [answer.status_code for answer in refused] == [400, 400, 400]
    assert "NATS disconnected" not in bridge.log.read_text()


async def test_a_task_whose_id_is_longer_than_a_client_could_name_is_consumed_not_handed_out(
    bridge: BridgeProcess, nats_client: NatsClient
) -> None:
    task_type, run_id = unique("t"), unique("r") + "r" * MAX_TASK_ID_BYTES
    payload = {"task_id": f"{run_id}.s", "run_id": run_id, "step_id": "s", "attempt": 1}
    await nats_client.jetstream().publish(
        task_subject(task_type, run_id), json.dumps(payload).encode()
    )

    taken = poll(bridge.url, task_type, timeout_ms=1_000)

    assert taken == []
    assert "its run_id has" in bridge.log.read_text()
    assert "NATS disconnected" not in bridge.log.read_text()
