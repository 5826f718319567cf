"""Hostile input through the whole app, in process: every answer is a clean 4xx, never a 5xx."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Final
from urllib.parse import quote

import attrs
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from app.container import Container
from app.main import create_app
from domain.models import RunId, StepId, TaskPayload, TaskType, WorkerId, task_id_of
from domain.protocol import MAX_NAME_BYTES, MAX_TASK_ID_BYTES
from tests.factories import memory_container

BODY_LIMIT: Final = 1_024
NO_WAIT: Final = 1
DEEP: Final = 100_000
CONNECTS: Final = 200
"""Enough to show the count; tests/integration/test_hostile_http.py opens 2000 real sockets."""
CONNECTS_TIMEOUT_S: Final = 60

BODY_ROUTES: Final = (
    "/v1/workers/connect",
    "/v1/tasks/poll",
    "/v1/tasks/t1.s1/resolve",
    "/v1/sim/tasks",
    "/v1/sim/signals",
    "/v1/sim/clock/advance",
)


@pytest.fixture
def container() -> Container:
    return memory_container(max_body_bytes=BODY_LIMIT)


@pytest.fixture
async def client(container: Container) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=create_app(container)) as test_client:
        yield test_client


def assert_problem(response: Any, status: int, detail: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert (problem["status"], problem.get("field")) == (status, field)
    assert detail in problem["detail"]


async def enqueue_and_poll(client: AsyncTestClient[Litestar], run_id: str) -> dict[str, Any]:
    created = await client.post("/v1/sim/tasks", json={"task_type": "t", "run_id": run_id})
    assert created.status_code == 201, created.text
    polled = await client.post("/v1/tasks/poll", json={"task_types": ["t"], "timeout_ms": NO_WAIT})
    (task,) = polled.json()
    assert isinstance(task, dict)
    return task


async def events_of(client: AsyncTestClient[Litestar], run_id: str) -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = (await client.get(f"/v1/sim/runs/{run_id}/events")).json()
    return listed


@pytest.mark.parametrize("path", BODY_ROUTES)
async def test_a_body_over_the_limit_is_413_on_every_route(
    client: AsyncTestClient[Litestar], path: str
) -> None:
    body = json.dumps({"task_types": ["t"], "padding": "x" * BODY_LIMIT})

    response = await client.post(path, content=body)

    assert_problem(response, 413, "request body too large")


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize(
    "body",
    [
        b'{"output":' + b"[" * DEEP + b"]" * DEEP + b"}",
        b'{"task_types":' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}",
    ],
    ids=["array", "object"],
)
async def test_json_nested_100k_deep_is_400_on_every_route(path: str, body: bytes) -> None:
    async with AsyncTestClient(app=create_app(memory_container())) as client:
        response = await client.post(path, content=body)

    assert_problem(response, 400, "nested too deeply")


async def test_json_nested_within_reason_reaches_the_event_byte_for_byte(
    client: AsyncTestClient[Litestar],
) -> None:
    task = await enqueue_and_poll(client, "r1")
    output = b"[" * 100 + b"]" * 100
    body = b'{"action":"complete","output":%s}' % output

    done = await client.post(f"/v1/tasks/{task['task_id']}/resolve", content=body)

    assert done.status_code == 200, done.text
    raw_events = (await client.get("/v1/sim/runs/r1/events")).content
    assert b'"payload":' + output in raw_events


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/tasks/poll", b'\xff{"task_types":["t"]}', None),
        ("/v1/tasks/poll", b'{"task_types":["t\xff"]}', "task_types"),
        ("/v1/tasks/poll", b'{"task_types":["t"],"worker_id":"\xc3\x28"}', "worker_id"),
        ("/v1/workers/connect", b'{"worker_id":"w\xed\xa0\x80","task_types":["t"]}', "worker_id"),
        ("/v1/sim/tasks", b'{"task_type":"t","input":"\xfe"}', "input"),
        ("/v1/tasks/t1.s1/resolve", b'{"action":"complete","output":{"a":"\x80"}}', "output"),
        ("/v1/sim/signals", b'{"run_id":"r","name":"n","data":"\xc0\xaf"}', "data"),
    ],
)
async def test_a_body_that_is_not_utf8_is_400_naming_the_field(
    client: AsyncTestClient[Litestar], path: str, body: bytes, field: str | None
) -> None:
    response = await client.post(path, content=body)

    assert_problem(response, 400, "not UTF-8", field)


@pytest.mark.parametrize(
    "task_id",
    [
        "a%2Fb",
        "a%2fb%2F..%2F..",
        "%2e%2e",
        "%2E%2E%2F%2E%2E%2Fhealthz",
        "..%2F..%2Fv1%2Fworkers",
        "%25",
        "a%252Fb",
        "%C3%A9t%C3%A9.%E2%9C%93",
        "%FF%FE",
        "a%00b",
    ],
)
async def test_a_task_id_the_bridge_never_issued_is_a_clean_404(
    client: AsyncTestClient[Litestar], task_id: str
) -> None:
    resolved = await client.post(f"/v1/tasks/{task_id}/resolve", json={"action": "heartbeat"})
    checkpoint = await client.get(f"/v1/tasks/{task_id}/checkpoint")

    assert_problem(resolved, 404, "task not found")
    assert checkpoint.status_code in (400, 404)
    assert checkpoint.headers["content-type"].startswith("application/problem+json")


LONG_NAME: Final = "n" * (MAX_NAME_BYTES + 1)
LONG_TASK_ID: Final = "r" * (MAX_TASK_ID_BYTES + 1)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/tasks/poll", {"task_types": ["t"], "worker_id": LONG_NAME}, "worker_id"),
        ("/v1/workers/connect", {"task_types": ["t"], "worker_id": LONG_NAME}, "worker_id"),
        ("/v1/sim/tasks", {"task_type": "t", "run_id": LONG_NAME}, "run_id"),
        ("/v1/sim/tasks", {"task_type": "t", "step_id": LONG_NAME}, "step_id"),
        ("/v1/sim/signals", {"run_id": LONG_NAME, "name": "go", "data": 1}, "run_id"),
        ("/v1/sim/signals", {"run_id": "r1", "name": LONG_NAME, "data": 1}, "name"),
        (f"/v1/tasks/{LONG_TASK_ID}/resolve", {"action": "heartbeat"}, "task_id"),
        ("/v1/tasks/resolve", [{"task_id": LONG_TASK_ID, "action": "heartbeat"}], "[0].task_id"),
    ],
)
async def test_a_name_longer_than_nats_subjects_take_is_400_naming_it(
    client: AsyncTestClient[Litestar], path: str, body: object, field: str
) -> None:
    """A NATS server closes a connection that sends a subject near 4 KB, and every request on
    it fails until it reconnects (tests/integration/test_nats_bridge.py)."""
    answered = await client.post(path, json=body)

    assert_problem(answered, 400, "exceeds", field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "heartbeat", "worker_id": LONG_NAME}, "worker_id"),
        ({"action": "send_signal", "run_id": LONG_NAME, "name": "go", "data": 1}, "run_id"),
        ({"action": "send_signal", "run_id": "r1", "name": LONG_NAME, "data": 1}, "name"),
        ({"action": "wait_signal", "name": LONG_NAME, "timeout_ms": 1}, "name"),
    ],
)
async def test_a_resolve_naming_something_too_long_is_400_naming_the_field(
    client: AsyncTestClient[Litestar], body: dict[str, Any], field: str
) -> None:
    task = await enqueue_and_poll(client, "r1")

    answered = await client.post(f"/v1/tasks/{task['task_id']}/resolve", json=body)
    read = await client.get(f"/v1/tasks/{LONG_TASK_ID}/checkpoint")

    assert_problem(answered, 400, "exceeds", field)
    assert_problem(read, 400, "exceeds", "task_id")


async def test_names_of_the_longest_length_are_taken(
    client: AsyncTestClient[Litestar],
) -> None:
    run_id, name = "r" * MAX_NAME_BYTES, "n" * MAX_NAME_BYTES
    created = await client.post(
        "/v1/sim/tasks", json={"task_type": "t", "run_id": run_id, "step_id": name}
    )
    polled = await client.post(
        "/v1/tasks/poll", json={"task_types": ["t"], "timeout_ms": NO_WAIT, "worker_id": name}
    )
    (task,) = polled.json()
    signalled = await client.post(
        f"/v1/tasks/{task['task_id']}/resolve",
        json={"action": "send_signal", "run_id": run_id, "name": name, "data": 1},
    )
    done = await client.post(f"/v1/tasks/{task['task_id']}/resolve", json={"action": "complete"})

    assert created.status_code == 201, created.text
    assert len(task["task_id"]) == MAX_TASK_ID_BYTES
    assert (signalled.status_code, done.status_code) == (200, 200), signalled.text


@pytest.mark.parametrize(
    ("run_id", "step_id"),
    [("r" * (MAX_NAME_BYTES + 1), "s"), ("r", "\u00e9" * (MAX_NAME_BYTES // 2 + 1))],
)
async def test_a_task_whose_ids_are_longer_than_a_client_could_name_is_consumed_not_handed_out(
    client: AsyncTestClient[Litestar], container: Container, run_id: str, step_id: str
) -> None:
    """Its run could not be named by its own send_signal; in bytes, as NATS counts."""
    run, step = RunId(run_id), StepId(step_id)
    task = TaskPayload(task_id=task_id_of(run, step), run_id=run, step_id=step)
    await container.queue().publish_task(TaskType("t"), task, msg_id="long.queued")

    polled = await client.post("/v1/tasks/poll", json={"task_types": ["t"], "timeout_ms": NO_WAIT})

    assert (polled.status_code, polled.json()) == (200, [])
    assert container.queue().messages() == []


async def test_a_task_id_is_bounded_in_bytes_not_characters(
    client: AsyncTestClient[Litestar],
) -> None:
    task_id = quote("\u00e9" * (MAX_TASK_ID_BYTES // 2 + 1), safe="")

    resolved = await client.post(f"/v1/tasks/{task_id}/resolve", json={"action": "heartbeat"})

    assert_problem(resolved, 400, "exceeds", "task_id")


MAX_PAYLOAD: Final = 1_048_576
"""nats-server's default max_payload, which the simulator holds messages to."""


@pytest.mark.parametrize(
    ("action", "field", "overhead"),
    [("stream", "data", 40), ("complete", "output", 200), ("checkpoint", "data", -1)],
)
async def test_what_nats_would_refuse_as_too_large_is_413_on_the_simulator_too(
    action: str, field: str, overhead: int
) -> None:
    """As tests/integration/test_nats_bridge.py finds on NATS: a value that fits max_payload
    alone but not with the message's headers, and a checkpoint one byte over it."""
    container = memory_container(max_body_bytes=2 * MAX_PAYLOAD)
    async with AsyncTestClient(app=create_app(container)) as client:
        task = await enqueue_and_poll(client, "r1")
        value = b'"' + b"x" * (MAX_PAYLOAD - overhead - 2) + b'"'
        body = b'{"action":"%s","%s":%s}' % (action.encode(), field.encode(), value)
        traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

        too_large = await client.post(
            f"/v1/tasks/{task['task_id']}/resolve",
            content=body,
            headers={"traceparent": traceparent},
        )
        enqueued = await client.post(
            "/v1/sim/tasks", content=b'{"task_type":"t","input":%s}' % value
        )
        completed = await client.post(
            f"/v1/tasks/{task['task_id']}/resolve", json={"action": "complete"}
        )

    assert_problem(too_large, 413, "larger than the NATS server's max_payload")
    assert_problem(enqueued, 413, "larger than the NATS server's max_payload")
    assert completed.status_code == 200, completed.text


@pytest.mark.parametrize("step_id", ["a/b", "a%2Fb", "schritt-\u00fc", "..", "a b?c#d"])
async def test_a_task_id_the_engine_issued_resolves_whatever_its_characters(
    client: AsyncTestClient[Litestar], container: Container, step_id: str
) -> None:
    task = TaskPayload(
        task_id=task_id_of(RunId("r1"), StepId(step_id)),
        run_id=RunId("r1"),
        step_id=StepId(step_id),
    )
    await container.queue().publish_task(TaskType("t"), task, msg_id="r1.queued")
    polled = await client.post("/v1/tasks/poll", json={"task_types": ["t"], "timeout_ms": NO_WAIT})
    (handed_out,) = polled.json()
    in_url = quote(handed_out["task_id"], safe="")

    done = await client.post(f"/v1/tasks/{in_url}/resolve", json={"action": "complete"})

    assert handed_out["task_id"] == f"r1.{step_id}"
    assert done.status_code == 200, done.text
    assert [e["type"] for e in await events_of(client, "r1")] == ["step.started", "step.completed"]


async def test_a_checkpoint_under_a_task_id_with_a_slash_reads_back(
    client: AsyncTestClient[Litestar], container: Container
) -> None:
    run, step = RunId("r1"), StepId("a/b")
    task = TaskPayload(task_id=task_id_of(run, step), run_id=run, step_id=step)
    await container.queue().publish_task(TaskType("t"), task, msg_id="r1.queued")
    await client.post("/v1/tasks/poll", json={"task_types": ["t"], "timeout_ms": NO_WAIT})

    saved = await client.post(
        "/v1/tasks/r1.a%2Fb/resolve", content=b'{"action":"checkpoint","data":{"n": 1}}'
    )
    read = await client.get("/v1/tasks/r1.a%2Fb/checkpoint")

    assert saved.status_code == 200, saved.text
    assert read.content == b'{"n": 1}'


async def test_concurrent_complete_and_fail_on_one_task_let_exactly_one_win(
    client: AsyncTestClient[Litestar],
) -> None:
    run_ids = [f"r{n}" for n in range(20)]
    tasks = [await enqueue_and_poll(client, run_id) for run_id in run_ids]

    answers = await asyncio.gather(
        *(
            client.post(f"/v1/tasks/{task['task_id']}/resolve", json=body)
            for task in tasks
            for body in ({"action": "complete"}, {"action": "fail", "error": "boom"})
        )
    )

    pairs = zip(answers[::2], answers[1::2], strict=True)
    for task, (complete, fail) in zip(tasks, pairs, strict=True):
        assert sorted((complete.status_code, fail.status_code)) == [200, 409]
        winner = "step.completed" if complete.status_code == 200 else "step.failed"
        types = [e["type"] for e in await events_of(client, task["run_id"])]
        assert [t for t in types if t.startswith("step.")] == ["step.started", winner]


@attrs.define
class RawConnect:
    """One connect request driven straight through the ASGI app, so that thousands fit in
    one test: `started` is set once the stream is open, `leave` ends it as a client would."""

    app: Litestar
    body: bytes
    started: asyncio.Event = attrs.field(factory=asyncio.Event)
    leave: asyncio.Event = attrs.field(factory=asyncio.Event)
    _body_sent: bool = False

    async def run(self) -> None:
        await self.app(self._scope(), self._receive, self._send)  # type: ignore[arg-type]

    def _scope(self) -> dict[str, Any]:
        path = "/v1/workers/connect"
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }

    async def _receive(self) -> dict[str, Any]:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 200
            self.started.set()


async def test_hundreds_of_connects_with_one_worker_id_count_and_all_deregister() -> None:
    container = memory_container()
    app = create_app(container)
    registry = container.worker_registry()
    body = json.dumps({"worker_id": "w1", "task_types": ["t"]}).encode()
    connects = [RawConnect(app, body) for _ in range(CONNECTS)]
    async with AsyncTestClient(app=app) as client, asyncio.timeout(CONNECTS_TIMEOUT_S):
        running = [asyncio.create_task(connect.run()) for connect in connects]
        await asyncio.gather(*(connect.started.wait() for connect in connects))
        while_open = (registry.sessions(WorkerId("w1")), (await client.get("/v1/workers")).json())
        for connect in connects[:-1]:
            connect.leave.set()
        await asyncio.gather(*running[:-1])
        one_left = (
            registry.sessions(WorkerId("w1")),
            len((await client.get("/v1/workers")).json()),
        )
        connects[-1].leave.set()
        await running[-1]
        after = (registry.sessions(WorkerId("w1")), await registry.registered())

    assert while_open[0] == CONNECTS
    assert [w["worker_id"] for w in while_open[1]] == ["w1"]
    assert one_left == (1, 1)
    assert after == (0, [])
