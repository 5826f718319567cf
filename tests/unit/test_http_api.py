"""The HTTP API through Litestar's test client, on the memory backend."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from dependency_injector import providers
from litestar.testing import AsyncTestClient

from adapters.memory.kv import MemoryBuckets
from app.main import create_app
from domain.errors import BackendUnavailableError
from domain.models import TaskType, WorkerId
from domain.services.workers import ConnectCommand
from tests.factories import memory_container

NO_WAIT = 1


async def enqueue(client: AsyncTestClient[Any], **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/sim/tasks", json={"task_type": "email.send", **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def poll_one(client: AsyncTestClient[Any], task_type: str = "email.send") -> dict[str, Any]:
    response = await client.post(
        "/v1/tasks/poll", json={"task_types": [task_type], "timeout_ms": NO_WAIT}
    )
    assert response.status_code == 200, response.text
    (task,) = response.json()
    assert isinstance(task, dict)
    return task


async def resolve(client: AsyncTestClient[Any], task_id: str, body: dict[str, Any] | str) -> Any:
    content = body if isinstance(body, str) else json.dumps(body)
    return await client.post(f"/v1/tasks/{task_id}/resolve", content=content)


async def events_of(client: AsyncTestClient[Any], run_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/sim/runs/{run_id}/events")
    assert response.status_code == 200
    events: list[dict[str, Any]] = response.json()
    return events


def assert_problem(response: Any, status: int, detail: str, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert detail in problem["detail"]
    assert problem.get("field") == field


async def test_a_polled_task_carries_its_input_byte_exact_and_a_lease(
    client: AsyncTestClient[Any],
) -> None:
    raw_input = '{"to": "a@b.c", "n": 1e2, "s": "\\u00e9"}'
    response = await client.post(
        "/v1/sim/tasks", content=f'{{"task_type":"email.send","run_id":"r1","input":{raw_input}}}'
    )
    assert response.status_code == 201

    answer = await client.post("/v1/tasks/poll", json={"task_types": ["email.send"]})

    assert raw_input.encode() in answer.content
    (task,) = answer.json()
    assert (task["task_id"], task["run_id"], task["step_id"]) == ("r1.step-1", "r1", "step-1")
    assert task["attempt"] == 1
    assert task["lease_id"]
    assert "iteration" not in task


async def test_step_started_is_published_before_the_task_is_handed_out(
    client: AsyncTestClient[Any],
) -> None:
    await enqueue(client, run_id="r1")

    task = await poll_one(client)

    (started,) = await events_of(client, "r1")
    assert started["type"] == "step.started"
    assert started["attempt_number"] == task["attempt"]
    assert started["step_id"] == "step-1"
    assert started["timestamp"].endswith("Z")


async def test_complete_publishes_the_output_verbatim_and_a_repeat_is_a_replay(
    client: AsyncTestClient[Any],
) -> None:
    await enqueue(client, run_id="r1")
    task = await poll_one(client)

    first = await resolve(client, task["task_id"], '{"action":"complete","output":{"ok": true}}')
    again = await resolve(client, task["task_id"], {"action": "complete", "output": {"ok": True}})

    assert first.status_code == 200
    assert "x-dagnats-replayed" not in first.headers
    assert again.status_code == 200
    assert again.headers["x-dagnats-replayed"] == "true"
    events = await events_of(client, "r1")
    assert [e["type"] for e in events] == ["step.started", "step.completed", "workflow.completed"]
    assert events[1]["payload"] == {"ok": True}
    assert events[1]["attempt_number"] == 1


async def test_a_different_terminal_action_after_complete_is_a_conflict(
    client: AsyncTestClient[Any],
) -> None:
    await enqueue(client, run_id="r1")
    task = await poll_one(client)
    await resolve(client, task["task_id"], {"action": "complete"})

    response = await resolve(client, task["task_id"], {"action": "fail", "error": "late"})

    assert_problem(response, 409, "already resolved with action complete")


async def test_a_stale_lease_id_is_a_conflict_and_leaves_the_new_delivery_alone(
    client: AsyncTestClient[Any],
) -> None:
    await enqueue(client, run_id="r1")
    first = await poll_one(client)
    await resolve(client, first["task_id"], {"action": "pause", "duration_ms": 1})
    second = await client.post(
        "/v1/tasks/poll", json={"task_types": ["email.send"], "timeout_ms": 2_000}
    )
    (redelivered,) = second.json()

    stale = await resolve(
        client, first["task_id"], {"action": "complete", "lease_id": first["lease_id"]}
    )

    assert_problem(stale, 409, "is not the task's current lease")
    assert redelivered["lease_id"] not in stale.text
    assert redelivered["attempt"] == 2
    fresh = await resolve(
        client, first["task_id"], {"action": "complete", "lease_id": redelivered["lease_id"]}
    )
    assert fresh.status_code == 200


async def test_pause_with_a_checkpoint_hands_it_to_the_next_delivery(
    client: AsyncTestClient[Any],
) -> None:
    await enqueue(client, run_id="r1")
    task = await poll_one(client)

    paused = await resolve(
        client, task["task_id"], '{"action":"pause","duration_ms":1,"checkpoint":{"sent": 3}}'
    )
    answer = await client.post(
        "/v1/tasks/poll", json={"task_types": ["email.send"], "timeout_ms": 2_000}
    )
    saved = await client.get(f"/v1/tasks/{task['task_id']}/checkpoint")

    assert paused.status_code == 200
    assert b'"checkpoint":{"sent": 3}' in answer.content
    assert saved.content == b'{"sent": 3}'


async def test_fail_publishes_the_engine_payload_with_permanent_as_non_retriable(
    client: AsyncTestClient[Any],
) -> None:
    await enqueue(client, run_id="r1")
    task = await poll_one(client)

    response = await resolve(
        client, task["task_id"], {"action": "fail", "error": "boom", "failure_type": "permanent"}
    )

    assert response.status_code == 200
    (failed,) = [e for e in await events_of(client, "r1") if e["type"] == "step.failed"]
    assert failed["payload"] == {"error": "boom", "failure_type": "non_retriable"}


async def test_signals_flow_from_one_task_to_another(client: AsyncTestClient[Any]) -> None:
    await enqueue(client, run_id="r1", step_id="sender")
    await enqueue(client, run_id="r2", step_id="waiter")
    sender = await poll_one(client)
    waiter = await poll_one(client)

    sent = await resolve(
        client,
        sender["task_id"],
        '{"action":"send_signal","run_id":"r2","name":"go","data":{"v": 1}}',
    )
    received = await resolve(
        client, waiter["task_id"], {"action": "wait_signal", "name": "go", "timeout_ms": 1_000}
    )

    assert sent.status_code == 200
    assert received.status_code == 200
    assert received.content == b'{"v": 1}'


async def test_wait_signal_times_out_with_408(client: AsyncTestClient[Any]) -> None:
    await enqueue(client, run_id="r1")
    task = await poll_one(client)

    response = await resolve(
        client, task["task_id"], {"action": "wait_signal", "name": "never", "timeout_ms": 1}
    )

    assert_problem(response, 408, "never")


@pytest.mark.parametrize(
    ("body", "status", "detail", "field"),
    [
        ("", 400, "invalid JSON", None),
        ("[1]", 400, "invalid JSON", None),
        ('{"task_types":"a"}', 400, "invalid JSON", "task_types"),
        ('{"task_types":["a"],"max_tasks":"5"}', 400, "invalid JSON", "max_tasks"),
        ("{}", 400, "task_types is required", "task_types"),
        ('{"task_types":[""]}', 400, "task_types entries must not be empty", "task_types"),
        ('{"task_types":["has space"]}', 400, 'illegal character " "', "task_types"),
        ('{"task_types":[".a"]}', 400, "must not start or end with '.'", "task_types"),
        ('{"task_types":["a..b"]}', 400, "empty subject token", "task_types"),
        ('{"task_types":["a"],"worker_id":"w 1"}', 400, 'invalid worker_id "w 1"', "worker_id"),
        ('{"task_types":["a"],"poll_id":""}', 400, 'invalid poll_id ""', "poll_id"),
        ('{"task_types":["a"],"poll_id":"a.b"}', 400, 'invalid poll_id "a.b"', "poll_id"),
        ('{"task_types":["a"],"poll_id":"p 1"}', 400, "invalid poll_id", "poll_id"),
        (f'{{"task_types":["a"],"poll_id":"{"p" * 129}"}}', 400, "invalid poll_id", "poll_id"),
        ('{"task_types":["a"],"poll_id":7}', 400, "invalid JSON", "poll_id"),
    ],
)
async def test_bad_poll_bodies_are_400_naming_the_field(
    client: AsyncTestClient[Any], body: str, status: int, detail: str, field: str | None
) -> None:
    response = await client.post("/v1/tasks/poll", content=body)

    assert_problem(response, status, detail, field)


@pytest.mark.parametrize(
    ("body", "detail", "field"),
    [
        ("{}", "action is required", "action"),
        ('{"action":"explode"}', "invalid action: explode", "action"),
        ('{"action":"fail","failure_type":"bogus"}', "invalid failure_type: bogus", "failure_type"),
        (
            '{"action":"pause","duration_ms":0}',
            "duration_ms must be in (0, 3600000]",
            "duration_ms",
        ),
        ('{"action":"checkpoint"}', "data is required", "data"),
        ('{"action":"send_signal","name":"x","data":1}', "run_id is required", "run_id"),
        ('{"action":"wait_signal","name":"x"}', "timeout_ms must be in", "timeout_ms"),
    ],
)
async def test_bad_resolve_bodies_are_400_and_keep_the_lease(
    client: AsyncTestClient[Any], body: str, detail: str, field: str
) -> None:
    await enqueue(client, run_id="r1")
    task = await poll_one(client)

    response = await resolve(client, task["task_id"], body)

    assert_problem(response, 400, detail, field)
    assert (await resolve(client, task["task_id"], {"action": "heartbeat"})).status_code == 200


async def test_resolving_an_unknown_task_is_404(client: AsyncTestClient[Any]) -> None:
    response = await resolve(client, "nope.nothing", {"action": "complete"})

    assert_problem(response, 404, "task not found")


async def test_an_empty_poll_answers_an_empty_array(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/v1/tasks/poll", json={"task_types": ["idle"], "timeout_ms": 1})

    assert response.status_code == 200
    assert response.content == b"[]"


async def test_overlapping_task_types_are_reported_as_a_conflict(
    client: AsyncTestClient[Any],
) -> None:
    await client.post("/v1/tasks/poll", json={"task_types": ["a"], "timeout_ms": 1})

    response = await client.post("/v1/tasks/poll", json={"task_types": ["a.b"], "timeout_ms": 1})

    assert_problem(response, 409, "task.a.>")
    assert "task.a.b.>" in response.json()["detail"]


async def test_a_body_over_the_limit_is_413() -> None:
    app = create_app(memory_container(max_body_bytes=64))
    async with AsyncTestClient(app=app) as client:
        response = await client.post(
            "/v1/tasks/poll", content=json.dumps({"task_types": ["a" * 100]})
        )

    assert_problem(response, 413, "too large")


async def test_with_a_token_every_v1_route_needs_it_but_health_does_not() -> None:
    app = create_app(memory_container(token="s3cret"))
    async with AsyncTestClient(app=app) as client:
        anonymous = await client.post("/v1/tasks/poll", json={"task_types": ["a"]})
        wrong = await client.get("/v1/workers", headers={"Authorization": "Bearer nope"})
        lowercase = await client.get("/v1/workers", headers={"Authorization": "bearer s3cret"})
        right = await client.get("/v1/workers", headers={"Authorization": "Bearer s3cret"})
        health = await client.get("/healthz")

    assert_problem(anonymous, 401, "unauthorized")
    assert_problem(wrong, 401, "unauthorized")
    assert_problem(lowercase, 401, "unauthorized")
    assert right.status_code == 200
    assert health.status_code == 200


async def test_the_openapi_document_lists_every_route(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/schema/openapi.json")

    paths = set(response.json()["paths"])
    assert {
        "/v1/workers/connect",
        "/v1/tasks/poll",
        "/v1/tasks/{task_id}/resolve",
        "/v1/tasks/{task_id}/checkpoint",
        "/v1/workers",
        "/v1/sim/tasks",
        "/v1/sim/runs/{run_id}/events",
        "/healthz",
        "/readyz",
    } <= paths


async def test_readiness_and_health(client: AsyncTestClient[Any]) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


@attrs.frozen
class LostBackend:
    """A backend this process can no longer reach, as a NATS connection closed for good."""

    async def check(self) -> None:
        raise BackendUnavailableError("NATS is not connected")

    def lost_for_good(self) -> str:
        return "the NATS connection closed for good (nats: maximum payload violation)"


async def test_health_is_503_once_the_backend_is_lost_for_good() -> None:
    container = memory_container()
    container.probe.override(providers.Object(LostBackend()))
    async with AsyncTestClient(app=create_app(container)) as client:
        health = await client.get("/healthz")

    assert_problem(health, 503, "closed for good (nats: maximum payload violation): restart")
    assert health.headers["retry-after"]


async def test_a_connect_whose_registration_cannot_be_stored_is_500_register_failed() -> None:
    """The Go bridge's text (PROTOCOL.md 2.4, B19), with the cause after it."""
    container = memory_container()
    container.buckets.override(providers.Object(MemoryBuckets(container.clock(), workers=False)))
    async with AsyncTestClient(app=create_app(container)) as client:
        response = await client.post(
            "/v1/workers/connect", json={"worker_id": "w1", "task_types": ["t"]}
        )

    assert_problem(response, 500, "register failed: workers KV not configured")


async def test_a_missing_checkpoint_is_404(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/v1/tasks/r9.s9/checkpoint")

    assert_problem(response, 404, "no checkpoint saved for this task")


@pytest.mark.parametrize(
    ("body", "detail", "field"),
    [
        ('{"task_types":["a"]}', "worker_id is required", "worker_id"),
        ('{"worker_id":"w 1","task_types":["a"]}', 'invalid worker_id "w 1"', "worker_id"),
        ('{"worker_id":"w1"}', "task_types is required", "task_types"),
        ('{"worker_id":"w1","task_types":["a*"]}', 'illegal character "*"', "task_types"),
    ],
)
async def test_bad_connect_bodies_are_400_before_any_stream_opens(
    client: AsyncTestClient[Any], body: str, detail: str, field: str
) -> None:
    response = await client.post("/v1/workers/connect", content=body)

    assert_problem(response, 400, detail, field)


async def test_a_repeated_poll_id_answers_the_same_tasks_and_leases(
    client: AsyncTestClient[Any],
) -> None:
    await enqueue(client, run_id="r1", input={"n": 1})
    await enqueue(client, run_id="r2")
    body = {"task_types": ["email.send"], "timeout_ms": NO_WAIT, "poll_id": "poll-7_a"}

    first = await client.post("/v1/tasks/poll", json=body)
    repeat = await client.post("/v1/tasks/poll", json=body)
    fresh = await poll_one(client)

    assert first.status_code == repeat.status_code == 200
    assert repeat.content == first.content
    (task,) = first.json()
    assert (task["run_id"], task["input"]) == ("r1", {"n": 1})
    assert (fresh["run_id"], fresh["attempt"]) == ("r2", 1)
    assert [e["type"] for e in await events_of(client, "r1")] == ["step.started"]


async def test_a_connected_worker_polls_up_to_its_max_tasks_and_frees_them_on_leaving() -> None:
    container = memory_container()
    registry = container.worker_registry()
    worker = ConnectCommand(worker_id=WorkerId("w1"), task_types=[TaskType("t")], max_tasks=2)
    async with AsyncTestClient(app=create_app(container)) as client:
        for run_id in ("r1", "r2", "r3"):
            await enqueue(client, task_type="t", run_id=run_id)
        await registry.open_session(worker)
        body = {"task_types": ["t"], "max_tasks": 5, "timeout_ms": 30_000, "worker_id": "w1"}

        capped = await client.post("/v1/tasks/poll", json=body)
        at_cap = await client.post("/v1/tasks/poll", json=body)
        await registry.close_session(worker.worker_id)
        after = await client.post(
            "/v1/tasks/poll", json={"task_types": ["t"], "max_tasks": 5, "timeout_ms": NO_WAIT}
        )
        events = await events_of(client, "r1")

    assert [t["run_id"] for t in capped.json()] == ["r1", "r2"]
    assert at_cap.content == b"[]"
    assert sorted((t["run_id"], t["attempt"]) for t in after.json()) == [
        ("r1", 2),
        ("r2", 2),
        ("r3", 1),
    ]
    assert [(e["type"], e.get("worker_id")) for e in events] == [
        ("step.started", "w1"),
        ("step.started", None),
    ]


SPELLINGS_OF_V1 = [
    ("GET", "/v1/workers"),
    ("GET", "//v1/workers"),
    ("GET", "/v1//workers"),
    ("GET", "///v1///workers/"),
    ("GET", "/%76%31/workers"),
    ("GET", "/V1/workers"),
    ("GET", "/v1%2Fworkers"),
    ("GET", "/v1/nonexistent"),
    ("POST", "/v1/workers"),
    ("DELETE", "/v1/tasks/poll"),
    ("GET", "/v1/sim/runs"),
]


async def answers_to(app_token: str | None, sent_token: str | None) -> list[int]:
    headers = {"Authorization": f"Bearer {sent_token}"} if sent_token else {}
    app = create_app(memory_container(token=app_token))
    async with AsyncTestClient(app=app, base_url="http://bridge.local") as client:
        return [
            (
                await client.request(method, f"http://bridge.local{path}", headers=headers)
            ).status_code
            for method, path in SPELLINGS_OF_V1
        ]


async def test_without_the_token_every_spelling_of_a_v1_path_is_401_before_routing() -> None:
    anonymous = await answers_to("s3cret", None)

    # An unknown path (404), a wrong method (405) or the simulator's routes tell nothing.
    assert anonymous == [401] * len(SPELLINGS_OF_V1)


async def test_with_the_token_every_spelling_answers_as_it_does_without_auth() -> None:
    with_the_token = await answers_to("s3cret", "s3cret")
    without_auth = await answers_to(None, None)

    assert with_the_token == without_auth
    assert with_the_token[:5] == [200] * 5  # the router skips empty segments
    assert with_the_token[-3:] == [405, 405, 200]
