"""POST /v1/tasks/resolve: each item answers what the single resolve of its task would."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.main import create_app
from tests.factories import memory_container
from tests.unit.test_http_api import assert_problem, enqueue, events_of, poll_one, resolve

BATCH = "/v1/tasks/resolve"


@pytest.fixture
async def twin() -> AsyncIterator[AsyncTestClient[Any]]:
    """A second bridge, to compare the batch with single resolves on the same story."""
    async with AsyncTestClient(app=create_app(memory_container())) as test_client:
        yield test_client


async def take(client: AsyncTestClient[Any], run_id: str) -> dict[str, Any]:
    await enqueue(client, run_id=run_id)
    return await poll_one(client)


async def types_of(client: AsyncTestClient[Any], run_id: str) -> list[str]:
    return [event["type"] for event in await events_of(client, run_id)]


def item(task: dict[str, Any], action: str = "complete", **body: Any) -> dict[str, Any]:
    return {"task_id": task["task_id"], "action": action, "lease_id": task["lease_id"], **body}


async def batch(client: AsyncTestClient[Any], body: Any) -> Any:
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return await client.post(BATCH, content=content)


async def test_every_item_is_applied_and_answered_in_order(client: AsyncTestClient[Any]) -> None:
    first, second = await take(client, "r1"), await take(client, "r2")

    response = await client.post(
        BATCH,
        content=b'[{"task_id":"r1.step-1","action":"complete","output":{"n":1e2}},'
        b'{"task_id":"r2.step-1","action":"fail","error":"no","failure_type":"non_retriable"}]',
    )

    assert response.status_code == 200, response.text
    assert response.json() == [
        {"task_id": first["task_id"], "status": 200, "replayed": False},
        {"task_id": second["task_id"], "status": 200, "replayed": False},
    ]
    assert "step.completed" in await types_of(client, "r1")
    assert b'{"n":1e2}' in (await client.get("/v1/sim/runs/r1/events")).content
    assert "step.failed" in await types_of(client, "r2")


async def test_a_repeated_terminal_action_is_answered_as_a_replay(
    client: AsyncTestClient[Any],
) -> None:
    task = await take(client, "r1")
    await batch(client, [item(task)])

    again = await batch(client, [item(task)])

    assert again.json() == [{"task_id": task["task_id"], "status": 200, "replayed": True}]
    assert (await types_of(client, "r1")).count("step.completed") == 1


async def test_one_items_failure_leaves_the_others_applied(client: AsyncTestClient[Any]) -> None:
    task = await take(client, "r1")

    response = await batch(
        client,
        [
            {"task_id": "nobody.step-1", "action": "complete"},
            item(task, lease_id="an-old-lease"),
            item(task, "heartbeat"),
            item(task, "fly"),
        ],
    )

    answers = response.json()
    assert [answer["status"] for answer in answers] == [404, 409, 200, 400]
    assert answers[0]["detail"] == "task not found"
    assert answers[3]["field"] == "action"


async def test_two_terminal_actions_on_one_task_let_exactly_one_win(
    client: AsyncTestClient[Any],
) -> None:
    task = await take(client, "r1")

    response = await batch(
        client, [item(task), item(task, "fail", error="x", failure_type="retriable")]
    )

    statuses = sorted(answer["status"] for answer in response.json())
    assert statuses == [200, 409]
    terminal = [t for t in await types_of(client, "r1") if t in {"step.completed", "step.failed"}]
    assert len(terminal) == 1


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        ("{}", None, "expected an array"),
        ("[1]", "[0]", "item 0"),
        ('[{"action":"complete"}]', "[0].task_id", "task_id is required"),
        (
            '[{"task_id":"a.b","action":"heartbeat"},'
            '{"task_id":"a.b","action":"wait_signal","name":"s","timeout_ms":5}]',
            "[1].action",
            "cannot be batched",
        ),
        ('[{"task_id":"a.b","action":5}]', "[0].action", "item 0"),
        ('[{"task_id":"a.b","action":"heartbeat"},{"task_id":5}]', "[1].task_id", "item 1"),
        ('[{"task_id":"","action":"heartbeat"}]', "[0].task_id", "task_id is required"),
        (json.dumps([{"task_id": "a.b", "action": "heartbeat"}] * 257), None, "at most 256"),
    ],
)
async def test_a_bad_batch_is_refused_whole_naming_the_item(
    client: AsyncTestClient[Any], body: str, field: str | None, detail: str
) -> None:
    response = await batch(client, body)

    assert_problem(response, 400, detail, field)


async def test_a_batch_answers_the_statuses_single_resolves_answer(
    client: AsyncTestClient[Any], twin: AsyncTestClient[Any]
) -> None:
    story = [
        ("complete", {}),
        ("complete", {}),
        ("fail", {"error": "x", "failure_type": "retriable"}),
        ("heartbeat", {}),
        ("complete", {"lease_id": "stale"}),
    ]
    batched, single = await take(client, "r1"), await take(twin, "r1")

    via_batch = [
        (await batch(client, [item(batched, action, **body)])).json()[0]["status"]
        for action, body in story
    ]
    via_single = [
        (
            await resolve(
                twin, single["task_id"], {"lease_id": single["lease_id"], **body, "action": action}
            )
        ).status_code
        for action, body in story
    ]

    assert via_batch == via_single == [200, 200, 409, 409, 409]
