"""`--replicas`: what the bridge creates on a real 3-node cluster, what it adopts, what a single
server refuses; and 503, not 500, while a stream has no leader."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import api

from adapters.nats.jetstream import JetStream
from adapters.wire import (
    CHECKPOINTS_BUCKET,
    HISTORY_STREAM,
    LEASES_BUCKET,
    POLLS_BUCKET,
    SIGNALS_BUCKET,
    TASK_STREAM,
    WORKERS_BUCKET,
    consumer_name,
)
from app.embedded import free_port
from domain.models import StepId, TaskPayload
from tests.faults.processes import NatsNode, cluster_nodes
from tests.integration.conftest import (
    BRIDGE_COMMAND,
    STARTUP_TIMEOUT_S,
    BridgeProcess,
    isolated_environment,
    start_bridge,
)
from tests.integration.jetstream import task_queue, task_stream
from tests.integration.test_nats_bridge import resolve
from tests.integration.test_nats_queue import pulls_waiting, steps

pytestmark = pytest.mark.integration

REPLICAS = 3
BRIDGE_BUCKETS = (WORKERS_BUCKET, CHECKPOINTS_BUCKET, SIGNALS_BUCKET, LEASES_BUCKET)
CREATED_BY_THE_BRIDGE = (TASK_STREAM, HISTORY_STREAM, *(f"KV_{name}" for name in BRIDGE_BUCKETS))
ADOPTED = f"KV_{POLLS_BUCKET}"
CLUSTER_READY_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[NatsNode]]:
    """Three nodes routed to one another; a test that stops some restarts them."""
    nodes = cluster_nodes(tmp_path_factory.mktemp("cluster"))
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
async def observer(cluster: list[NatsNode]) -> AsyncIterator[NatsClient]:
    client = await nats.connect([node.url for node in cluster])
    yield client
    await client.close()


async def replicas_of(client: NatsClient, stream: str) -> int | None:
    return (await client.jetstream().stream_info(stream)).config.num_replicas


async def an_operators_bucket_of_one_replica(client: NatsClient) -> None:
    """Made as soon as the new cluster can place it (it answers nothing before its meta leader
    is elected: a state of other processes, with no event to await)."""
    async with asyncio.timeout(CLUSTER_READY_TIMEOUT_S):
        while True:
            try:
                await client.jetstream().create_key_value(
                    api.KeyValueConfig(bucket=POLLS_BUCKET, replicas=1)
                )
                return
            except nats.errors.Error:
                await asyncio.sleep(0.2)


@pytest.fixture(scope="module")
def replicated_bridge(
    cluster: list[NatsNode], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BridgeProcess]:
    """`serve --provision --replicas 3` on the cluster, where an operator made bridge_polls
    first, with one replica; the simulator on, to enqueue tasks."""

    async def prepare() -> None:
        client = await nats.connect([node.url for node in cluster])
        try:
            await an_operators_bucket_of_one_replica(client)
        finally:
            await client.close()

    asyncio.run(prepare())
    bridge = start_bridge(
        tmp_path_factory.mktemp("bridge"),
        "--nats-url", cluster[0].url,
        "--provision", "--replicas", str(REPLICAS),
        "--simulator", "--no-simulate-engine",
    )  # fmt: skip
    yield bridge
    bridge.stop()


async def test_provision_creates_every_stream_and_bucket_with_the_replicas_asked(
    replicated_bridge: BridgeProcess, observer: NatsClient
) -> None:
    for stream in CREATED_BY_THE_BRIDGE:
        assert await replicas_of(observer, stream) == REPLICAS, stream


async def test_an_existing_bucket_with_fewer_replicas_is_adopted_as_it_is_and_warned_about(
    replicated_bridge: BridgeProcess, observer: NatsClient
) -> None:
    assert await replicas_of(observer, ADOPTED) == 1
    warnings = [line for line in replicated_bridge.log.read_text().splitlines() if "WARN" in line]
    assert any(POLLS_BUCKET in line and "1 replicas" in line for line in warnings), warnings


async def test_a_consumer_leader_change_leaves_the_polls_waiting_and_the_type_its_puller(
    replicated_bridge: BridgeProcess, observer: NatsClient
) -> None:
    """JetStream ends the waiting pull request with `409 Leadership Change` when the type's
    consumer moves to another node: the puller sends another to the new leader, and the
    poll waiting on it sleeps on until a task comes."""
    js = JetStream(observer)
    async with task_stream(js) as stream, task_queue(observer, stream) as queue:
        waiting = asyncio.create_task(
            queue.wait_ready([stream.type()], timedelta(seconds=CLUSTER_READY_TIMEOUT_S))
        )
        async with asyncio.timeout(CLUSTER_READY_TIMEOUT_S):
            await pulls_waiting(js, stream, stream.type())
        puller = await queue._puller(stream.type())

        stepdown = f"$JS.API.CONSUMER.LEADER.STEPDOWN.{stream.name}.{consumer_name(stream.type())}"
        answer = json.loads((await observer.request(stepdown, b"", timeout=5)).data)
        assert answer.get("success"), answer
        async with asyncio.timeout(CLUSTER_READY_TIMEOUT_S):
            await pulls_waiting(js, stream, stream.type())  # sent again, to the new leader
        still_waiting = not waiting.done()
        task = TaskPayload(run_id=stream.run_id, step_id=StepId("s1"))
        await queue.publish_task(stream.type(), task, msg_id=f"{stream.run_id}.s1.queued")
        async with asyncio.timeout(CLUSTER_READY_TIMEOUT_S):
            await waiting

        assert still_waiting
        assert await queue._puller(stream.type()) is puller
        assert steps(await queue.fetch(stream.type(), 1, timedelta(0))) == ["s1"]


def test_a_resolve_answers_503_while_the_stream_has_no_leader_then_the_bridge_recovers(
    replicated_bridge: BridgeProcess, cluster: list[NatsNode]
) -> None:
    """Two of three nodes down: no stream has a quorum, so none has a leader; the bridge stays
    connected to the node left."""
    url = replicated_bridge.url
    task_type = enqueued(url, "leaderless.t")
    # The poll creates the type's consumer, whose own leader may take a moment to be elected.
    first = once_elected(lambda: poll_answer(url, task_type))
    assert first.status_code == 200, first.text
    (task,) = first.json()
    survivor, *lost = cluster
    for node in lost:
        node.stop()
    try:
        refused = resolve(url, task["task_id"], action="complete", lease_id=task["lease_id"])
        publish = enqueue(url, "leaderless.t")
    finally:
        for node in lost:
            node.start()

    assert (refused.status_code, refused.headers.get("Retry-After")) == (503, "5"), refused.text
    assert (publish.status_code, publish.headers.get("Retry-After")) == (503, "5"), publish.text
    assert survivor.process is not None
    assert survivor.process.poll() is None
    assert once_elected(lambda: enqueue(url, "recovered.t")).status_code == 201
    polled = once_elected(lambda: poll_answer(url, "recovered.t"))
    assert polled.status_code == 200, polled.text
    (fresh,) = polled.json()
    completed = resolve(url, fresh["task_id"], action="complete", lease_id=fresh["lease_id"])
    assert completed.status_code == 200, completed.text


def enqueue(url: str, task_type: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/sim/tasks", json={"task_type": task_type}, timeout=15)


def enqueued(url: str, task_type: str) -> str:
    answer = enqueue(url, task_type)
    assert answer.status_code == 201, answer.text
    return task_type


def poll_answer(url: str, task_type: str) -> httpx.Response:
    body = {"task_types": [task_type], "timeout_ms": 5_000}
    return httpx.post(f"{url}/v1/tasks/poll", json=body, timeout=15)


def once_elected(call: Callable[[], httpx.Response]) -> httpx.Response:
    """The first answer that is not 503 (the cluster electing a leader, a new consumer's or
    its leaders again after an outage: a state of other processes, with no event to
    await)."""
    deadline = time.monotonic() + CLUSTER_READY_TIMEOUT_S
    answer = call()
    while answer.status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.5)
        answer = call()
    return answer


def test_a_single_server_refuses_replicas_above_one_at_start_up_with_the_reason(
    tmp_path: Path,
) -> None:
    server = NatsNode(tmp_path / "single")
    server.start()
    try:
        command = [BRIDGE_COMMAND, "serve", "--nats-url", server.url, "--provision"]
        finished = subprocess.run(
            [*command, "--replicas", str(REPLICAS), "--port", str(free_port())],
            env=isolated_environment(),
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT_S,
            check=False,
        )
    finally:
        server.stop()

    assert finished.returncode == 1
    errors = [line for line in finished.stderr.splitlines() if "cannot create" in line]
    assert errors, finished.stderr
    assert "replicas 3" in errors[0]
    assert "replicas > 1 not supported" in errors[0]
