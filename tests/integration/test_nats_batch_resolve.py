"""POST /v1/tasks/resolve on a real nats-server: each item settles its delivery and publishes
its event as the single resolve does, and answers its own status."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.embedded import EmbeddedNats
from tests.integration.conftest import BridgeProcess, start_bridge

pytestmark = pytest.mark.integration


@pytest.fixture
def bridge(tmp_path: Path, nats_server: EmbeddedNats) -> Iterator[BridgeProcess]:
    process = start_bridge(
        tmp_path,
        "--nats-url",
        nats_server.url,
        "--provision",
        "--no-simulate-engine",
        "--simulator",
    )
    yield process
    if process.process.poll() is None:
        process.stop()


def event_types(client: httpx.Client, run_id: str) -> list[str]:
    return [event["type"] for event in client.get(f"/v1/sim/runs/{run_id}/events").json()]


def test_a_batch_settles_each_task_as_single_resolves_would(
    bridge: BridgeProcess, tmp_path: Path
) -> None:
    task_type = f"batch-{tmp_path.name}"
    runs = [f"{task_type}-{n}" for n in range(3)]
    with httpx.Client(base_url=bridge.url) as client:
        for run_id in runs:
            assert client.post(
                "/v1/sim/tasks", json={"task_type": task_type, "run_id": run_id}
            ).is_success
        tasks: list[dict[str, Any]] = client.post(
            "/v1/tasks/poll", json={"task_types": [task_type], "max_tasks": 3}
        ).json()
        by_run = {task["run_id"]: task for task in tasks}
        first, second, third = (by_run[run_id] for run_id in runs)
        items = [
            {"task_id": first["task_id"], "action": "complete", "lease_id": first["lease_id"]},
            {"task_id": second["task_id"], "action": "fail", "error": "no"},
            {"task_id": third["task_id"], "action": "complete", "lease_id": "not-the-lease"},
        ]

        answers = client.post("/v1/tasks/resolve", json=items).json()
        replay = client.post("/v1/tasks/resolve", json=items[:1]).json()
        histories = [event_types(client, run_id) for run_id in runs]
        single = client.post(
            f"/v1/tasks/{third['task_id']}/resolve",
            json={"action": "complete", "lease_id": third["lease_id"]},
        )

    assert [answer["status"] for answer in answers] == [200, 200, 409]
    assert replay == [{"task_id": first["task_id"], "status": 200, "replayed": True}]
    assert histories == [
        ["step.started", "step.completed"],
        ["step.started", "step.failed"],
        ["step.started"],
    ]
    assert single.status_code == 200
