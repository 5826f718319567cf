"""Metrics and request logs through the HTTP API, on the memory backend."""

from __future__ import annotations

import logging
from typing import Any, get_args

import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from domain.models import TaskType, WorkerId
from domain.protocol import RESOLVE_ACTIONS
from domain.services.actions import Action
from domain.services.workers import ConnectCommand
from tests.factories import memory_container

NO_WAIT = 1
TOKEN = "s3cret-token"
RESOLVE_ROUTE = "/v1/tasks/{task_id}/resolve"
TASK_INPUT = "input-31"
"""A task's input, that no log line may carry."""


async def scrape(client: AsyncTestClient[Any], **headers: str) -> dict[tuple[str, str], float]:
    """Every sample of /metrics, keyed by name and its sorted labels as `k=v,...`."""
    response = await client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def take_one(client: AsyncTestClient[Any], run_id: str, **poll: Any) -> dict[str, Any]:
    created = await client.post(
        "/v1/sim/tasks",
        json={"task_type": "email.send", "run_id": run_id, "input": {"n": TASK_INPUT}},
    )
    assert created.status_code == 201
    answer = await client.post(
        "/v1/tasks/poll", json={"task_types": ["email.send"], "timeout_ms": NO_WAIT, **poll}
    )
    (task,) = answer.json()
    assert isinstance(task, dict)
    return task


async def test_a_poll_and_a_complete_move_the_counters(client: AsyncTestClient[Any]) -> None:
    before = await scrape(client)
    task = await take_one(client, "r1")
    during = await scrape(client)

    done = await client.post(
        f"/v1/tasks/{task['task_id']}/resolve", json={"action": "complete", "output": {}}
    )
    after = await scrape(client)

    assert done.status_code == 200
    handed_out = ("dagnats_bridge_tasks_handed_out_total", "task_type=email.send")
    applied = ("dagnats_bridge_resolves_total", "action=complete,outcome=applied")
    resolves = (
        "dagnats_bridge_http_requests_total",
        f"method=POST,route={RESOLVE_ROUTE},status=200",
    )
    waited = ("dagnats_bridge_poll_wait_seconds_count", "outcome=handed_out")
    assert handed_out not in before
    assert during[handed_out] == 1
    assert during[waited] == 1
    assert applied not in during
    assert after[applied] == 1
    assert after[resolves] == 1


async def test_leases_in_flight_are_counted_when_scraped(client: AsyncTestClient[Any]) -> None:
    await take_one(client, "r1")
    await take_one(client, "r2")

    samples = await scrape(client)

    assert samples[("dagnats_bridge_leases_in_flight", "")] == 2


def test_the_action_labels_are_the_actions_a_resolve_parses() -> None:
    assert {kind.action for kind in get_args(Action)} == RESOLVE_ACTIONS


async def test_replays_conflicts_and_unknown_tasks_are_resolve_outcomes(
    client: AsyncTestClient[Any],
) -> None:
    task = await take_one(client, "r1")
    resolve = f"/v1/tasks/{task['task_id']}/resolve"
    await client.post(resolve, json={"action": "complete"})

    await client.post(resolve, json={"action": "complete"})
    await client.post(resolve, json={"action": "fail", "error": "x"})
    await client.post("/v1/tasks/nope.s1/resolve", json={"action": "heartbeat"})
    await client.post(resolve, json={"action": "../../etc"})
    samples = await scrape(client)

    def resolves(action: str, outcome: str) -> float | None:
        return samples.get(("dagnats_bridge_resolves_total", f"action={action},outcome={outcome}"))

    assert resolves("complete", "replayed") == 1
    assert resolves("fail", "conflict") == 1
    assert resolves("heartbeat", "not_found") == 1
    assert resolves("invalid", "invalid") == 1


async def test_connected_workers_are_counted_while_they_hold_a_session() -> None:
    container = memory_container()
    registry = container.worker_registry()
    worker = ConnectCommand(worker_id=WorkerId("w1"), task_types=[TaskType("t")], max_tasks=1)
    async with AsyncTestClient(app=create_app(container)) as client:
        await registry.open_session(worker)
        await registry.open_session(worker)
        connected = await scrape(client)
        await registry.close_session(worker.worker_id)
        await registry.close_session(worker.worker_id)
        gone = await scrape(client)

    assert connected[("dagnats_bridge_connected_workers", "")] == 1
    assert gone[("dagnats_bridge_connected_workers", "")] == 0


async def test_requests_are_counted_by_route_template_not_by_task_id(
    client: AsyncTestClient[Any],
) -> None:
    for task_id in ("a.s1", "b.s1", "c.s1"):
        await client.get(f"/v1/tasks/{task_id}/checkpoint")

    samples = await scrape(client)

    route = "/v1/tasks/{task_id}/checkpoint"
    assert samples[("dagnats_bridge_http_requests_total", f"method=GET,route={route},status=404")]
    assert not any("a.s1" in labels for _, labels in samples)


async def test_requests_no_route_matches_are_counted_under_one_route_label(
    client: AsyncTestClient[Any],
) -> None:
    await client.get("/nope/a.s1")
    await client.get("/nope/b.s1")
    await client.delete("/metrics")
    await client.request("BREW", "/v1/tasks/poll")

    samples = await scrape(client)

    unmatched = {
        labels: count
        for (name, labels), count in samples.items()
        if name == "dagnats_bridge_http_requests_total" and "route=unmatched" in labels
    }
    assert unmatched == {
        "method=GET,route=unmatched,status=404": 2,
        "method=DELETE,route=unmatched,status=405": 1,
        "method=other,route=unmatched,status=405": 1,
    }


async def test_metrics_are_open_by_default_even_with_a_token() -> None:
    app = create_app(memory_container(token=TOKEN))

    async with AsyncTestClient(app=app) as client:
        scraped = await client.get("/metrics")
        refused = await client.get("/v1/workers")

    assert scraped.status_code == 200
    assert refused.status_code == 401


async def test_with_metrics_auth_metrics_need_the_token() -> None:
    app = create_app(memory_container(token=TOKEN, metrics_auth=True))

    async with AsyncTestClient(app=app) as client:
        refused = await client.get("/metrics")
        samples = await scrape(client, authorization=f"Bearer {TOKEN}")
        healthy = await client.get("/healthz")

    assert refused.status_code == 401
    # Refused before routing, so counted as the router's own answers are.
    unauthorised = ("dagnats_bridge_http_requests_total", "method=GET,route=unmatched,status=401")
    assert samples[unauthorised] == 1
    assert healthy.status_code == 200


async def test_a_resolve_logs_one_line_with_its_fields_and_no_payload_or_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    headers = {"authorization": f"Bearer {TOKEN}"}
    async with AsyncTestClient(app=create_app(memory_container(token=TOKEN))) as client:
        client.headers.update(headers)
        task = await take_one(client, "r1", worker_id="w1")
        caplog.clear()

        await client.post(
            f"/v1/tasks/{task['task_id']}/resolve",
            json={"action": "complete", "output": {"secret": "payload-42"}},
        )

    (line,) = [r for r in caplog.records if r.name == "dagnats_bridge.requests"]
    fields = vars(line)
    assert line.levelno == logging.INFO
    assert {k: fields[k] for k in ("task_id", "run_id", "step_id", "action", "outcome")} == {
        "task_id": "r1.step-1",
        "run_id": "r1",
        "step_id": "step-1",
        "action": "complete",
        "outcome": "applied",
    }
    assert fields["worker_id"] == "w1"
    assert fields["duration_ms"] >= 0
    everything = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "payload-42" not in everything
    assert TOKEN not in everything


async def test_extensions_log_at_debug_and_terminal_actions_and_refusals_at_info(
    client: AsyncTestClient[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    task = await take_one(client, "r1")
    resolve = f"/v1/tasks/{task['task_id']}/resolve"
    caplog.clear()

    for body in (
        {"action": "heartbeat"},
        {"action": "checkpoint", "data": {"step": 1}},
        {"action": "stream", "data": {"line": 1}},
        {"action": "complete"},
        {"action": "heartbeat"},
    ):
        answer = await client.post(resolve, json=body)
        assert answer.status_code < 500, answer.text

    lines = [r for r in caplog.records if r.name == "dagnats_bridge.requests"]
    assert [(r.action, r.outcome, r.levelname) for r in lines] == [  # type: ignore[attr-defined]
        ("heartbeat", "applied", "DEBUG"),
        ("checkpoint", "applied", "DEBUG"),
        ("stream", "applied", "DEBUG"),
        ("complete", "applied", "INFO"),
        ("heartbeat", "conflict", "INFO"),
    ]


async def test_a_poll_logs_a_line_per_task_handed_out(
    client: AsyncTestClient[Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    task = await take_one(client, "r1", worker_id="w1")

    (line,) = [r for r in caplog.records if r.name == "dagnats_bridge.requests"]
    assert (line.action, line.outcome, line.task_id, line.worker_id) == (  # type: ignore[attr-defined]
        "poll",
        "handed_out",
        task["task_id"],
        "w1",
    )
    everything = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert TASK_INPUT not in everything
