"""Hostile input over real HTTP: what only a real server shows (raw bytes on the wire, the
path as the client encoded it, chunked bodies, thousands of sockets)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlsplit

import httpx
import pytest
from nats.aio.client import Client as NatsClient

from app.embedded import EmbeddedNats
from tests.integration.conftest import BridgeProcess, eventually, start_bridge

pytestmark = pytest.mark.integration

BODY_LIMIT: Final = 1_048_576
"""The default --max-body-bytes."""
CONNECTS: Final = 2_000
OPENING_AT_ONCE: Final = 200
CONDITION_TIMEOUT_S: Final = 20.0
FD_SLACK: Final = 20
"""Descriptors the server may open on its own meanwhile (logs, a NATS reconnect...)."""


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[BridgeProcess]:
    process = start_bridge(tmp_path, "--backend", "memory")
    yield process
    if process.process.poll() is None:
        process.stop()


def problem_of(response: httpx.Response) -> dict[str, object]:
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, object] = response.json()
    return problem


def test_raw_bytes_that_are_not_utf8_are_400_naming_the_field(bridge: BridgeProcess) -> None:
    body = b'{"task_types":["t"],"worker_id":"w\xff\xfe"}'

    response = httpx.post(f"{bridge.url}/v1/tasks/poll", content=body)

    assert response.status_code == 400
    assert problem_of(response)["field"] == "worker_id"


def test_json_nested_100k_deep_is_400(bridge: BridgeProcess) -> None:
    body = b'{"action":"complete","output":' + b"[" * 100_000 + b"]" * 100_000 + b"}"

    response = httpx.post(f"{bridge.url}/v1/tasks/r1.step-1/resolve", content=body)

    assert response.status_code == 400
    assert "nested too deeply" in str(problem_of(response)["detail"])


def test_a_chunked_body_over_the_limit_is_413(bridge: BridgeProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"task_types":["t"],"padding":"'
        for _ in range(BODY_LIMIT // 1_000 + 1):
            yield b"x" * 1_000
        yield b'"}'

    response = httpx.post(f"{bridge.url}/v1/tasks/poll", content=chunks())

    assert response.status_code == 413
    assert problem_of(response)["detail"] == "request body too large"


@pytest.mark.parametrize(
    "task_id", ["a%2Fb", "%2e%2e", "%2E%2E%2F%2E%2E%2Fhealthz", "%C3%A9", "%FF"]
)
def test_a_task_id_the_bridge_never_issued_is_a_clean_404(
    bridge: BridgeProcess, task_id: str
) -> None:
    response = httpx.post(f"{bridge.url}/v1/tasks/{task_id}/resolve", json={"action": "complete"})

    assert response.status_code == 404
    assert problem_of(response)["detail"] == "task not found"


def test_a_task_id_longer_than_any_task_id_is_400_naming_it(bridge: BridgeProcess) -> None:
    response = httpx.post(
        f"{bridge.url}/v1/tasks/{'x' * 4_000}/resolve", json={"action": "complete"}
    )

    assert response.status_code == 400
    assert problem_of(response)["field"] == "task_id"


def test_concurrent_complete_and_fail_let_exactly_one_win(bridge: BridgeProcess) -> None:
    with httpx.Client(base_url=bridge.url) as client:
        client.post("/v1/sim/tasks", json={"task_type": "t", "run_id": "r1"})
        (task,) = client.post("/v1/tasks/poll", json={"task_types": ["t"]}).json()

    async def both() -> tuple[httpx.Response, httpx.Response]:
        url = f"{bridge.url}/v1/tasks/{task['task_id']}/resolve"
        async with httpx.AsyncClient() as client:
            return await asyncio.gather(
                client.post(url, json={"action": "complete"}),
                client.post(url, json={"action": "fail", "error": "boom"}),
            )

    complete, fail = asyncio.run(both())

    assert sorted((complete.status_code, fail.status_code)) == [200, 409]
    events = httpx.get(f"{bridge.url}/v1/sim/runs/r1/events").json()
    terminal = [e["type"] for e in events if e["type"] in ("step.completed", "step.failed")]
    assert terminal == ["step.completed" if complete.status_code == 200 else "step.failed"]


def open_descriptors(bridge: BridgeProcess) -> int:
    return len(os.listdir(f"/proc/{bridge.process.pid}/fd"))


def held_connections(bridge: BridgeProcess) -> int:
    """The bridge's established TCP connections on its port, as the kernel lists them (the
    descriptors alone also count whatever the bridge opens or closes meanwhile)."""
    port = f"{urlsplit(bridge.url).port:04X}"
    established = "01"
    rows = Path(f"/proc/{bridge.process.pid}/net/tcp").read_text().splitlines()[1:]
    return sum(
        1
        for row in rows
        if (fields := row.split())[1].endswith(f":{port}") and fields[3] == established
    )


def registered(bridge: BridgeProcess) -> list[str]:
    return [w["worker_id"] for w in httpx.get(f"{bridge.url}/v1/workers").json()]


async def open_connects(url: str, count: int) -> list[asyncio.StreamWriter]:
    """`count` connect streams of worker w1, each open once its answer has begun."""
    address = urlsplit(url)
    body = json.dumps({"worker_id": "w1", "task_types": ["t"]}).encode()
    request = (
        b"POST /v1/workers/connect HTTP/1.1\r\nHost: bridge\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    gate = asyncio.Semaphore(OPENING_AT_ONCE)

    async def one() -> asyncio.StreamWriter:
        async with gate:
            reader, writer = await asyncio.open_connection(address.hostname, address.port)
            writer.write(request)
            await writer.drain()
            status = await reader.readline()
            assert status.startswith(b"HTTP/1.1 200"), status
            return writer

    return await asyncio.gather(*(one() for _ in range(count)))


async def close_all(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for writer in writers))


def test_thousands_of_connects_with_one_worker_id_register_once_and_leave_no_leak(
    bridge: BridgeProcess,
) -> None:
    before = open_descriptors(bridge)

    async def connect_and_leave() -> tuple[list[str], int]:
        writers = await open_connects(bridge.url, CONNECTS)
        while_open = (await asyncio.to_thread(registered, bridge), held_connections(bridge))
        await close_all(writers)
        return while_open

    workers_while_open, held_while_open = asyncio.run(connect_and_leave())

    assert workers_while_open == ["w1"]
    assert held_while_open >= CONNECTS
    assert eventually(lambda: registered(bridge) == [], timeout=CONDITION_TIMEOUT_S)
    assert eventually(
        lambda: open_descriptors(bridge) <= before + FD_SLACK, timeout=CONDITION_TIMEOUT_S
    )


@pytest.fixture
async def nats_bridge(tmp_path: Path, nats_server: EmbeddedNats) -> AsyncIterator[BridgeProcess]:
    process = start_bridge(tmp_path, "--nats-url", nats_server.url, "--provision", "--simulator")
    yield process
    if process.process.poll() is None:
        process.stop()


@pytest.mark.parametrize("step_id", ["a/b", "schritt-\u00fc", "50%"])
async def test_a_task_id_the_engine_issued_with_a_slash_or_unicode_resolves_on_nats(
    nats_bridge: BridgeProcess, nats_client: NatsClient, step_id: str
) -> None:
    task_type = f"hostile{uuid.uuid4().hex[:8]}"
    run_id = f"run{uuid.uuid4().hex[:8]}"
    task = {"task_id": f"{run_id}.{step_id}", "run_id": run_id, "step_id": step_id, "input": {}}
    await nats_client.jetstream().publish(
        f"task.{task_type}.{run_id}",
        json.dumps(task).encode(),
        headers={"Nats-Msg-Id": f"{run_id}.queued"},
    )

    async with httpx.AsyncClient(base_url=nats_bridge.url, timeout=15) as client:
        polled = await client.post(
            "/v1/tasks/poll", json={"task_types": [task_type], "timeout_ms": 5_000}
        )
        (handed_out,) = polled.json()
        in_url = quote(handed_out["task_id"], safe="")
        done = await client.post(f"/v1/tasks/{in_url}/resolve", json={"action": "complete"})
        events = (await client.get(f"/v1/sim/runs/{run_id}/events")).json()

    assert handed_out["task_id"] == f"{run_id}.{step_id}"
    assert done.status_code == 200, done.text
    assert [e["type"] for e in events] == ["step.started", "step.completed"]
