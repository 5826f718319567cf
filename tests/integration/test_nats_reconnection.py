"""The bridge's connection across a nats-server crash and restart, on a server of the test's
own: what waits on the server's memory of a request is sent again once reconnected."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Final

import attrs
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from adapters.nats import pulls
from adapters.nats.connection import NatsOptions, connect
from adapters.nats.inbox import Inbox
from adapters.nats.jetstream import JetStream
from adapters.nats.jsapi import pull_subject
from adapters.nats.pulls import TypePuller
from adapters.nats.queue import NatsTaskQueue
from app.embedded import EmbeddedNats
from domain.models import StepId, TaskPayload
from tests.integration.jetstream import TaskStream, task_queue, task_stream, unique
from tests.integration.test_nats_queue import pulls_waiting, steps

pytestmark = pytest.mark.integration

LONG_PULL_S: Final = 60.0
"""A waiting request's life here, so that only the reconnection can explain a prompt wake-up
(the bridge's own 2 s would also end a lost one within 3 s)."""
WAKE_LIMIT_S: Final = 15.0
"""Well inside LONG_PULL_S, well past a loaded machine's restart and reconnection."""
UNANSWERED_STREAM: Final = "UNANSWERED"
"""A stream that does not exist: its consumers' pull requests reach only the test."""


@attrs.define
class Reconnections:
    """Relays the connection's reconnections to what is made after it, as the bridge's
    lifespan relays them to its queue. Mutable on purpose: the listeners come later."""

    listeners: list[Callable[[], None]] = attrs.field(factory=list)
    seen: asyncio.Event = attrs.field(factory=asyncio.Event)

    def __call__(self) -> None:
        for listener in self.listeners:
            listener()
        self.seen.set()


@attrs.frozen
class Rig:
    server: EmbeddedNats
    client: NatsClient
    queue: NatsTaskQueue
    stream: TaskStream
    js: JetStream
    reconnections: Reconnections

    async def restart_the_server(self) -> None:
        """Kill the server, as a crash would, start it again on its port and store, and
        return once the connection has reconnected."""
        self.server.kill()
        self.server.start()
        async with asyncio.timeout(WAKE_LIMIT_S):
            await self.reconnections.seen.wait()


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
                reconnections.listeners.append(queue.reconnected)
                yield Rig(server, client, queue, stream, js, reconnections)
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

    await rig.restart_the_server()
    task = TaskPayload(run_id=rig.stream.run_id, step_id=StepId("s1"))
    await rig.queue.publish_task(rig.stream.type(), task, msg_id=f"{rig.stream.run_id}.s1.queued")
    async with asyncio.timeout(WAKE_LIMIT_S):
        await waiting

    fetched = await rig.queue.fetch(rig.stream.type(), 1, timedelta(seconds=WAKE_LIMIT_S))
    assert steps(fetched) == ["s1"]


async def test_a_fetch_whose_reply_was_lost_with_the_connection_ends_with_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a consumer that never answers, so that only the reconnection can end the fetch."""
    monkeypatch.setattr(pulls, "REPLY_TIMEOUT_S", LONG_PULL_S)
    consumer, heard = unique("unanswered-"), asyncio.Event()

    async def hear(_: Msg) -> None:
        heard.set()

    await rig.client.subscribe(pull_subject(UNANSWERED_STREAM, consumer), cb=hear)
    puller = TypePuller(
        rig.client,
        UNANSWERED_STREAM,
        consumer,
        timedelta(seconds=30),
        lambda: None,
        settlements=Inbox(rig.client),
    )
    await puller.start()
    rig.reconnections.listeners.append(puller.reconnected)
    try:
        fetching = asyncio.create_task(puller.pull(5))
        async with asyncio.timeout(WAKE_LIMIT_S):
            await heard.wait()
        await rig.restart_the_server()
        async with asyncio.timeout(WAKE_LIMIT_S):
            fetched = await fetching
    finally:
        await puller.close()

    assert (fetched, puller.faulted) == ([], False)
