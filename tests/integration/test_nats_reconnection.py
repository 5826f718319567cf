"""The bridge's connection across a nats-server crash and restart, on a server of the test's
own: what waits on the server's memory of a request is sent again once reconnected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Final

import attrs
import pytest

from adapters.nats import pulls
from adapters.nats.connection import NatsOptions, connect
from adapters.nats.jetstream import JetStream
from adapters.nats.queue import NatsTaskQueue
from app.embedded import EmbeddedNats
from domain.models import StepId, TaskPayload
from tests.integration.jetstream import TaskStream, task_queue, task_stream
from tests.integration.test_nats_queue import pulls_waiting, steps

pytestmark = pytest.mark.integration

LONG_PULL_S: Final = 60.0
"""A waiting request's life here, so that only the reconnection can explain a prompt wake-up
(the bridge's own 2 s would also end a lost one within 3 s)."""
WAKE_LIMIT_S: Final = 15.0
"""Well inside LONG_PULL_S, well past a loaded machine's restart and reconnection."""


@attrs.define
class Reconnections:
    """Relays the connection's reconnections to the queue made after it, and counts them.
    Mutable on purpose: the queue comes later."""

    queue: NatsTaskQueue | None = None
    seen: asyncio.Event = attrs.field(factory=asyncio.Event)

    def __call__(self) -> None:
        if self.queue is not None:
            self.queue.reconnected()
        self.seen.set()


@attrs.frozen
class Rig:
    server: EmbeddedNats
    queue: NatsTaskQueue
    stream: TaskStream
    js: JetStream
    reconnections: Reconnections


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setattr(pulls, "LONG_PULL_S", LONG_PULL_S)
    server = EmbeddedNats(tmp_path / "nats")
    reconnections = Reconnections()
    try:
        server.start()
        client = await connect(NatsOptions(servers=[server.url]), on_reconnected=reconnections)
        try:
            js = JetStream(client)
            async with task_stream(js) as stream, task_queue(client, stream) as queue:
                reconnections.queue = queue
                yield Rig(server, queue, stream, js, reconnections)
        finally:
            await client.close()
    finally:
        server.stop()


async def test_a_reconnection_wakes_the_polls_waiting_on_a_request_the_server_lost(
    rig: Rig,
) -> None:
    waiting = asyncio.create_task(
        rig.queue.wait_ready([rig.stream.type()], timedelta(seconds=2 * LONG_PULL_S))
    )
    await pulls_waiting(rig.js, rig.stream, rig.stream.type())

    rig.server.kill()
    rig.server.start()
    async with asyncio.timeout(WAKE_LIMIT_S):
        await rig.reconnections.seen.wait()
    task = TaskPayload(run_id=rig.stream.run_id, step_id=StepId("s1"))
    await rig.queue.publish_task(rig.stream.type(), task, msg_id=f"{rig.stream.run_id}.s1.queued")
    async with asyncio.timeout(WAKE_LIMIT_S):
        await waiting

    fetched = await rig.queue.fetch(rig.stream.type(), 1, timedelta(seconds=WAKE_LIMIT_S))
    assert steps(fetched) == ["s1"]
