"""The drain inside one process: polls, wait_signals, connects and readiness while it
drains, and which leases it leaves alone or releases."""

from __future__ import annotations

import asyncio
import signal
from datetime import timedelta
from typing import Any

import httpx
import uvicorn
from litestar.testing import AsyncTestClient

from adapters.memory.queue import MemoryTaskQueue, MessageState
from app.container import Container
from app.draining import DrainingServer
from app.main import create_app
from app.settings import ClockKind
from domain.models import LeaseState, RunId, TaskId, TaskType, WorkerId
from domain.services.actions import ResolveRequest
from domain.services.drain import Drain, DrainingRelease
from domain.services.poll import PollCommand
from domain.services.simulator import EnqueueCommand
from domain.services.workers import ConnectCommand
from tests.factories import memory_container

TASK = TaskType("t")


async def enqueued(container: Container, run_id: str) -> TaskId:
    task = await container.enqueue_task()(EnqueueCommand(task_type=TASK, run_id=RunId(run_id)))
    return TaskId(task.task_id or "")


def poll_for(timeout: timedelta, worker_id: str | None = None) -> PollCommand:
    return PollCommand(
        task_types=[TASK],
        max_tasks=1,
        timeout=timeout,
        worker_id=WorkerId(worker_id) if worker_id else None,
    )


async def test_a_waiting_poll_answers_with_what_it_holds_once_the_drain_begins() -> None:
    container = memory_container(clock=ClockKind.MANUAL)
    clock = container.clock()
    asleep = clock.sleepers
    waiting = asyncio.ensure_future(container.poll_service()(poll_for(timedelta(hours=1))))
    await asyncio.wait_for(clock.wait_for_sleepers(asleep + 1), timeout=5)
    assert not waiting.done()  # it waits on the manual clock, which stands still

    container.drain().begin()
    answer = await asyncio.wait_for(waiting, timeout=1)

    assert answer == []


async def test_while_draining_polls_connects_and_readiness_are_refused_and_resolves_served() -> (
    None
):
    container = memory_container()
    async with AsyncTestClient(app=create_app(container)) as client:
        await client.post("/v1/sim/tasks", json={"task_type": "t", "run_id": "r1"})
        (task,) = (await client.post("/v1/tasks/poll", json={"task_types": ["t"]})).json()

        container.drain().begin()
        refused: dict[str, Any] = {
            "poll": await client.post("/v1/tasks/poll", json={"task_types": ["t"]}),
            "connect": await client.post(
                "/v1/workers/connect", json={"worker_id": "w1", "task_types": ["t"]}
            ),
            "readyz": await client.get("/readyz"),
        }
        resolved = await client.post(
            f"/v1/tasks/{task['task_id']}/resolve", json={"action": "complete"}
        )

    for response in refused.values():
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["retry-after"] == "1"
        assert "shutting down" in response.json()["detail"]
    assert resolved.status_code == 200


async def test_a_wait_signal_waiting_when_the_drain_begins_answers_503_and_keeps_its_lease() -> (
    None
):
    container = memory_container(clock=ClockKind.MANUAL)
    clock = container.clock()
    task_id = await enqueued(container, "r1")
    (task,) = await container.poll_service()(poll_for(timedelta(0)))
    # In this loop, unlike the test client's portal, so that the drain reaches the request.
    app: Any = create_app(container)  # an ASGI app, typed more narrowly than httpx's
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge.local") as client:
        asleep = clock.sleepers
        body = {"action": "wait_signal", "name": "go", "timeout_ms": 3_600_000}
        waiting = asyncio.ensure_future(client.post(f"/v1/tasks/{task_id}/resolve", json=body))
        await asyncio.wait_for(clock.wait_for_sleepers(asleep + 1), timeout=5)
        assert not waiting.done()  # waiting for the signal, on a clock that stands still

        container.drain().begin()
        answer = await asyncio.wait_for(waiting, timeout=5)
    lease = await container.leases().get(task_id)

    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers["retry-after"] == "1"
    # Not settled: the worker waits again, on another replica, with the same lease.
    assert lease is not None
    assert (lease.state, lease.lease_id) == (LeaseState.ACTIVE, task.lease_id)


async def test_a_stream_closed_by_the_drain_leaves_the_worker_its_leases() -> None:
    container = memory_container()
    task_id = await enqueued(container, "r1")
    registry = container.worker_registry()
    await registry.open_session(
        ConnectCommand(worker_id=WorkerId("w1"), task_types=[TASK], max_tasks=1)
    )
    await container.poll_service()(poll_for(timedelta(0), worker_id="w1"))

    container.drain().begin()
    await registry.close_session(WorkerId("w1"))

    lease = await container.leases().get(task_id)
    assert lease is not None
    assert lease.state is LeaseState.ACTIVE
    assert await registry.registered() == []


async def test_on_the_way_out_the_leases_only_this_process_holds_are_released() -> None:
    container = memory_container()
    released_id = await enqueued(container, "r1")
    settled_id = await enqueued(container, "r2")
    poll = container.poll_service()
    for _ in range(2):
        await poll(poll_for(timedelta(0)))
    await container.resolve_service()(settled_id, ResolveRequest(action="complete"))
    container.drain().begin()

    released = await container.release_leases().left_behind()
    queue = container.queue()
    assert isinstance(queue, MemoryTaskQueue)
    # The settled task's message is gone; the other is deliverable at once, not after AckWait.
    left = [(message.delivery_count, message.state) for message in queue.messages()]
    again = await poll(poll_for(timedelta(0)))

    assert released == 1
    assert left == [(1, MessageState.AVAILABLE)]
    assert [task.task_id for task in again] == [released_id]


async def test_leases_of_a_shared_store_are_not_released_on_the_way_out() -> None:
    container = memory_container()
    await enqueued(container, "r1")
    await container.poll_service()(poll_for(timedelta(0)))
    shared = DrainingRelease(
        queue=container.queue(),
        leases=container.leases(),
        locks=container.task_locks(),
        drain=Drain(),
        local_leases=None,
    )

    released = await shared.left_behind()

    assert released == 0
    assert await container.leases().count() == 1


async def never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("no request is sent")


async def test_a_stop_signal_that_came_before_serving_starts_the_drain_once_serving() -> None:
    """A worker of --workers stopped while it still starts must not serve on regardless."""
    drain = Drain()
    config = uvicorn.Config(never_called, host="127.0.0.1", port=0, lifespan="off")
    server = DrainingServer(
        config, drain=drain, grace=timedelta(seconds=20), early_stops=[signal.SIGTERM]
    )
    raised_again: list[int] = []
    # uvicorn raises the signal it acted on again, once done, with the handler it found.
    previous = signal.signal(signal.SIGTERM, lambda signum, _: raised_again.append(signum))
    try:
        await asyncio.wait_for(server.serve(), timeout=10)
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert drain.begun
    assert raised_again == [signal.SIGTERM]
