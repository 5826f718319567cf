"""The simulator's HTTP API: runs of the engine simulation, signals, checkpoints, the clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.main import create_app
from app.settings import ClockKind
from tests.factories import memory_container
from tests.unit.test_http_api import assert_problem, enqueue, events_of, poll_one, resolve

EPOCH = "2026-01-01T00:00:00Z"


@pytest.fixture
async def manual() -> AsyncIterator[AsyncTestClient[Any]]:
    """The memory backend on a manual clock, with the engine simulation (its default)."""
    app = create_app(memory_container(clock=ClockKind.MANUAL))
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


async def runs_of(client: AsyncTestClient[Any]) -> dict[str, dict[str, Any]]:
    response = await client.get("/v1/sim/runs")
    assert response.status_code == 200, response.text
    return {run["run_id"]: run for run in response.json()}


async def advance(client: AsyncTestClient[Any], ms: Any) -> Any:
    return await client.post("/v1/sim/clock/advance", json={"ms": ms})


async def test_a_retriable_failure_comes_back_as_attempt_2_once_the_clock_reaches_the_backoff(
    manual: AsyncTestClient[Any],
) -> None:
    await enqueue(manual, run_id="r1", input={"to": "a@b.c"})
    first = await poll_one(manual)
    failed = await resolve(manual, first["task_id"], {"action": "fail", "error": "smtp down"})
    waiting = (await runs_of(manual))["r1"]

    early = await advance(manual, 999)
    still_waiting = (await runs_of(manual))["r1"]
    due = await advance(manual, 1)
    published = (await runs_of(manual))["r1"]
    # On a manual clock an empty poll would wait for the next advance: look before polling.
    assert "retry_at" not in published
    second = await poll_one(manual)
    completed = await resolve(manual, second["task_id"], {"action": "complete", "output": 1})
    done = (await runs_of(manual))["r1"]

    assert failed.status_code == 200
    assert waiting["retry_at"] == "2026-01-01T00:00:01Z"
    assert (early.status_code, still_waiting["retry_at"]) == (200, "2026-01-01T00:00:01Z")
    assert due.json() == {"now": "2026-01-01T00:00:01Z"}
    assert (second["task_id"], second["attempt"], second["input"]) == (
        first["task_id"],
        2,
        {"to": "a@b.c"},
    )
    assert completed.status_code == 200
    assert done == {
        "run_id": "r1",
        "step_id": "step-1",
        "task_type": "email.send",
        "status": "completed",
        "attempts": 2,
        "iteration": 0,
        "last_event": "workflow.completed",
    }
    history = [(e["type"], e.get("attempt_number")) for e in await events_of(manual, "r1")]
    assert history == [
        ("step.started", 1),
        ("step.failed", 1),
        ("step.started", 2),
        ("step.completed", 2),
        ("workflow.completed", None),
    ]


async def test_a_five_minute_ack_wait_expires_in_one_request(
    manual: AsyncTestClient[Any],
) -> None:
    await enqueue(manual, run_id="r1")
    first = await poll_one(manual)

    moved = await advance(manual, 300_000)
    again = await poll_one(manual)

    assert moved.json() == {"now": "2026-01-01T00:05:00Z"}
    assert (again["task_id"], again["attempt"]) == (first["task_id"], 2)


async def test_runs_list_every_run_with_its_status_and_attempts(
    client: AsyncTestClient[Any],
) -> None:
    await enqueue(client, run_id="r1")
    await enqueue(client, run_id="r2", iteration=4)
    task = await poll_one(client)
    await resolve(client, task["task_id"], {"action": "fail", "failure_type": "non_retriable"})

    runs = await runs_of(client)

    assert list(runs) == ["r1", "r2"]
    assert runs["r1"]["status"] == "failed"
    assert runs["r1"]["attempts"] == 1
    assert runs["r1"]["error"] == "unspecified error"
    assert runs["r2"] == {
        "run_id": "r2",
        "step_id": "step-1",
        "task_type": "email.send",
        "status": "running",
        "attempts": 0,
        "iteration": 4,
    }
    assert (await events_of(client, "r1"))[-1]["type"] == "workflow.failed"


async def test_beyond_the_runs_kept_the_run_that_finished_first_is_forgotten_with_its_history() -> (
    None
):
    app = create_app(memory_container(sim_runs_kept=2))
    async with AsyncTestClient(app=app) as client:
        for run_id in ("running", "r1", "r2", "r3"):
            await enqueue(client, run_id=run_id)
        await poll_one(client)  # the running run's, enqueued first
        for _ in range(3):
            task = await poll_one(client)
            await resolve(client, task["task_id"], {"action": "complete"})

        runs = await runs_of(client)
        histories = {run_id: await events_of(client, run_id) for run_id in ("running", "r1", "r3")}

    assert {run_id: run["status"] for run_id, run in runs.items()} == {
        "running": "running",
        "r2": "completed",
        "r3": "completed",
    }
    assert [event["type"] for event in histories["running"]] == ["step.started"]
    assert histories["r1"] == []
    assert histories["r3"][-1]["type"] == "workflow.completed"


async def test_a_signal_put_through_the_simulator_is_what_wait_signal_receives(
    client: AsyncTestClient[Any],
) -> None:
    await enqueue(client, run_id="r1", step_id="waiter")
    waiter = await poll_one(client)

    put = await client.post(
        "/v1/sim/signals", content='{"run_id":"r1","name":"approved","data":{"by": "ann"}}'
    )
    received = await resolve(
        client, waiter["task_id"], {"action": "wait_signal", "name": "approved", "timeout_ms": 1}
    )

    assert (put.status_code, put.content) == (204, b"")
    assert received.status_code == 200
    assert received.content == b'{"by": "ann"}'


@pytest.mark.parametrize(
    ("body", "detail", "field"),
    [
        ("", "invalid JSON", None),
        ('{"name":"go","data":1}', "run_id is required", "run_id"),
        ('{"run_id":"r 1","name":"go","data":1}', 'invalid run_id "r 1"', "run_id"),
        ('{"run_id":"r1","data":1}', "name is required", "name"),
        ('{"run_id":"r1","name":"a..b","data":1}', 'invalid name "a..b"', "name"),
        ('{"run_id":"r1","name":"go"}', "data is required", "data"),
        ('{"run_id":1,"name":"go","data":1}', "invalid JSON", "run_id"),
    ],
)
async def test_bad_signals_are_400_naming_the_field(
    client: AsyncTestClient[Any], body: str, detail: str, field: str | None
) -> None:
    response = await client.post("/v1/sim/signals", content=body)

    assert_problem(response, 400, detail, field)


async def test_a_checkpoint_is_read_back_verbatim_and_a_missing_one_is_404(
    client: AsyncTestClient[Any],
) -> None:
    await enqueue(client, run_id="r1")
    task = await poll_one(client)
    await resolve(client, task["task_id"], '{"action":"checkpoint","data":{"page": 7}}')

    saved = await client.get(f"/v1/sim/checkpoints/{task['task_id']}")
    missing = await client.get("/v1/sim/checkpoints/r1.other")

    assert saved.status_code == 200
    assert saved.headers["content-type"].startswith("application/json")
    assert saved.content == b'{"page": 7}'
    assert_problem(missing, 404, "no checkpoint saved for this task")


async def test_a_checkpoint_id_that_cannot_be_a_key_is_400_naming_the_task_id(
    client: AsyncTestClient[Any],
) -> None:
    for path in ("/v1/sim/checkpoints/r1..s", "/v1/tasks/r1..s/checkpoint"):
        response = await client.get(path)

        assert_problem(response, 400, 'invalid task_id "r1..s"', "task_id")


async def test_the_system_clock_cannot_be_advanced(client: AsyncTestClient[Any]) -> None:
    response = await advance(client, 1_000)

    assert_problem(response, 400, "the clock is not manual")


@pytest.mark.parametrize(
    ("body", "detail", "field"),
    [
        ({"ms": 0}, "ms must be in (0, ", "ms"),
        ({"ms": -5}, "ms must be in (0, ", "ms"),
        ({}, "ms must be in (0, ", "ms"),
        ({"ms": 10**15}, "ms must be in (0, ", "ms"),
        ({"ms": "5"}, "invalid JSON", "ms"),
        ({"ms": 1.5}, "invalid JSON", "ms"),
        ({"ms": True}, "invalid JSON", "ms"),
    ],
)
async def test_advancing_by_anything_but_a_positive_int_is_400(
    manual: AsyncTestClient[Any], body: dict[str, Any], detail: str, field: str
) -> None:
    response = await manual.post("/v1/sim/clock/advance", content=json.dumps(body))

    assert_problem(response, 400, detail, field)


async def test_without_the_engine_simulation_runs_are_not_served_and_runs_do_not_end() -> None:
    app = create_app(memory_container(simulate_engine=False))
    async with AsyncTestClient(app=app) as client:
        await enqueue(client, run_id="r1")
        task = await poll_one(client)
        await resolve(client, task["task_id"], {"action": "complete"})

        runs = await client.get("/v1/sim/runs")
        history = await events_of(client, "r1")
        signal = await client.post(
            "/v1/sim/signals", json={"run_id": "r1", "name": "go", "data": 1}
        )

    assert runs.status_code == 404
    assert [e["type"] for e in history] == ["step.started", "step.completed"]
    assert signal.status_code == 204


async def test_the_openapi_document_lists_the_simulator_routes(
    client: AsyncTestClient[Any],
) -> None:
    response = await client.get("/schema/openapi.json")

    paths = response.json()["paths"]
    assert {
        "/v1/sim/runs",
        "/v1/sim/signals",
        "/v1/sim/checkpoints/{task_id}",
        "/v1/sim/clock/advance",
    } <= set(paths)
    assert set(paths["/v1/sim/signals"]) == {"post"}
    assert "204" in paths["/v1/sim/signals"]["post"]["responses"]


async def test_the_simulator_routes_need_the_token_too() -> None:
    app = create_app(memory_container(token="s3cret", clock=ClockKind.MANUAL))
    async with AsyncTestClient(app=app) as client:
        anonymous = [
            await client.get("/v1/sim/runs"),
            await client.post("/v1/sim/signals", json={}),
            await client.get("/v1/sim/checkpoints/r1.s"),
            await advance(client, 1),
        ]

    for response in anonymous:
        assert_problem(response, 401, "unauthorized")
