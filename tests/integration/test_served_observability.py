"""Metrics and logs of the bridge as a user runs it: the console script, real HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.embedded import EmbeddedNats
from tests.integration.conftest import BridgeProcess, start_bridge

pytestmark = pytest.mark.integration


def metric_lines(client: httpx.Client) -> set[str]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return set(response.text.splitlines())


def log_entries(bridge: BridgeProcess) -> list[dict[str, Any]]:
    """The log (not a terminal, so JSON lines); every line must be one JSON object."""
    return [json.loads(line) for line in bridge.log.read_text().splitlines()]


def test_a_curl_session_moves_the_counters_and_logs_json_lines_without_payloads(
    bridge: BridgeProcess,
) -> None:
    handed_out = 'dagnats_bridge_tasks_handed_out_total{task_type="t"} 1.0'
    applied = 'dagnats_bridge_resolves_total{action="complete",outcome="applied"} 1.0'
    with httpx.Client(base_url=bridge.url) as client:
        before = metric_lines(client)
        client.post("/v1/sim/tasks", json={"task_type": "t", "run_id": "r1", "input": ["in-9"]})
        (task,) = client.post("/v1/tasks/poll", json={"task_types": ["t"]}).json()
        client.post(
            f"/v1/tasks/{task['task_id']}/resolve",
            json={"action": "complete", "output": {"secret": "out-7"}},
        )
        after = metric_lines(client)

    status = bridge.stop()

    assert handed_out not in before
    assert applied not in before
    assert {handed_out, applied} <= after
    assert status == 0
    entries = log_entries(bridge)
    (resolved,) = [e for e in entries if e.get("action") == "complete"]
    assert resolved["level"] == "INFO"
    assert (resolved["task_id"], resolved["run_id"], resolved["step_id"]) == (
        "r1.step-1",
        "r1",
        "step-1",
    )
    assert resolved["outcome"] == "applied"
    assert "duration_ms" in resolved
    assert [e["task_id"] for e in entries if e.get("action") == "poll"] == ["r1.step-1"]
    assert "out-7" not in bridge.log.read_text()
    assert "in-9" not in bridge.log.read_text()


def test_metrics_report_the_nats_connection(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    bridge = start_bridge(tmp_path, "--nats-url", nats_server.url, "--provision")
    try:
        with httpx.Client(base_url=bridge.url) as client:
            lines = metric_lines(client)
    finally:
        bridge.stop()

    assert "dagnats_bridge_nats_connected 1.0" in lines
    assert "dagnats_bridge_nats_reconnects_total 0.0" in lines


def test_with_metrics_auth_a_scrape_needs_the_token(tmp_path: Path) -> None:
    bridge = start_bridge(
        tmp_path,
        "--backend",
        "memory",
        DAGNATS_BRIDGE_TOKEN="tok-1",
        DAGNATS_BRIDGE_METRICS_AUTH="yes",
        DAGNATS_BRIDGE_LOG_FORMAT="text",
    )
    try:
        refused = httpx.get(f"{bridge.url}/metrics")
        scraped = httpx.get(f"{bridge.url}/metrics", headers={"authorization": "Bearer tok-1"})
    finally:
        bridge.stop()

    assert refused.status_code == 401
    assert scraped.status_code == 200
    assert "tok-1" not in bridge.log.read_text()
    assert not bridge.log.read_text().startswith("{")
