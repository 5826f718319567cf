"""The bridge's connection across a nats-server restart, on a server of the test's own: what
waits on the server's memory of a pull request is sent again once reconnected, and a server
that stops gracefully ends no poll."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Final

import attrs
import nats
import nats.errors
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
from adapters.wire import TASK_STREAM
from app.container import Container
from app.embedded import EmbeddedNats
from app.main import nats_lifespan
from app.settings import Settings
from domain.models import StepId, TaskPayload, TaskType
from tests.integration.jetstream import TaskStream, unique
from tests.integration.test_nats_queue import pulls_waiting, steps

pytestmark = pytest.mark.integration

LONG_PULL_S: Final = 60.0
"""A waiting request's life here, so that only the reconnection can explain a prompt wake-up
(the bridge's own 2 s would also end a lost one within 3 s)."""
WAKE_LIMIT_S: Final = 15.0
"""Well inside LONG_PULL_S, well past a loaded machine's restart and reconnection."""
UNANSWERED_STREAM: Final = "UNANSWERED"
"""A stream that does not exist: its consumers' pull requests reach only the test."""


@attrs.frozen
class Bridge:
    """The bridge's NATS side, as its lifespan opens it, on a server of the test's own."""

    server: EmbeddedNats
    queue: NatsTaskQueue
    js: JetStream
    stream: TaskStream = attrs.field(factory=lambda: TaskStream(TASK_STREAM, unique("q")))

    @property
    def task_type(self) -> TaskType:
        return self.stream.type()

    async def waiting_poll(self) -> asyncio.Task[None]:
        """A wait for the test's type, once its waiting request is out."""
        waiting = asyncio.create_task(
            self.queue.wait_ready([self.task_type], timedelta(seconds=2 * LONG_PULL_S))
        )
        async with asyncio.timeout(WAKE_LIMIT_S):
            await pulls_waiting(self.js, self.stream, self.task_type)
        return waiting

    async def restart_the_server(self, *, gracefully: bool) -> None:
        """Stop the server (SIGTERM, or SIGKILL as a crash) and start it again on its port and
        store. Off the event loop, so that the connection sees it go meanwhile: a publish
        written to the old socket before that would be lost."""
        await asyncio.to_thread(self.server.stop if gracefully else self.server.kill)
        await asyncio.to_thread(self.server.start)

    async def publish(self, step: str) -> None:
        task = TaskPayload(run_id=self.stream.run_id, step_id=StepId(step))
        msg_id = f"{self.stream.run_id}.{step}.queued"
        await self.queue.publish_task(self.task_type, task, msg_id=msg_id)


@pytest.fixture
async def bridge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bridge]:
    monkeypatch.setattr(pulls, "LONG_PULL_S", LONG_PULL_S)
    server = EmbeddedNats(tmp_path / "nats")
    try:
        server.start()
        container = Container(settings=Settings(nats_url=server.url, provision=True))
        async with nats_lifespan(container):
            yield Bridge(server, container.queue(), container.jetstream())
    finally:
        server.stop()


@pytest.mark.parametrize("gracefully", [False, True], ids=["crashed", "stopped gracefully"])
async def test_a_restart_of_the_server_ends_no_poll_waiting_through_it(
    bridge: Bridge, gracefully: bool
) -> None:
    """A crash loses the waiting request with the server's memory: the reconnection wakes
    the poll to send another. A graceful stop ends it with `409 Server Shutdown`: the poll
    sleeps on, through the restart. Either way the task that comes after reaches the poll,
    and the type keeps its puller."""
    waiting = await bridge.waiting_poll()
    puller = await bridge.queue._puller(bridge.task_type)

    await bridge.restart_the_server(gracefully=gracefully)
    await bridge.publish("s1")  # sent once reconnected
    async with asyncio.timeout(WAKE_LIMIT_S):
        await waiting

    assert await bridge.queue._puller(bridge.task_type) is puller
    assert steps(await bridge.queue.fetch(bridge.task_type, 1, timedelta(0))) == ["s1"]


@attrs.define
class Reconnections:
    """Relays the connection's reconnections to a puller made after it, as the bridge's
    lifespan relays them to its queue. Mutable on purpose: the puller comes later."""

    puller: TypePuller | None = None
    seen: asyncio.Event = attrs.field(factory=asyncio.Event)

    def __call__(self) -> None:
        if self.puller is not None:
            self.puller.reconnected()
        self.seen.set()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedNats]:
    started = EmbeddedNats(tmp_path / "nats")
    try:
        started.start()
        yield started
    finally:
        started.stop()


async def unanswered_puller(client: NatsClient, heard: asyncio.Event) -> TypePuller:
    """A puller on a consumer that never answers (its requests set `heard`), so that only a
    reconnection can end its fetch."""
    consumer = unique("unanswered-")

    async def hear(_: Msg) -> None:
        heard.set()

    await client.subscribe(pull_subject(UNANSWERED_STREAM, consumer), cb=hear)
    puller = TypePuller(
        client,
        UNANSWERED_STREAM,
        consumer,
        timedelta(seconds=30),
        lambda: None,
        settlements=Inbox(client),
    )
    await puller.start()
    return puller


async def test_a_fetch_whose_reply_was_lost_with_the_connection_ends_with_nothing(
    server: EmbeddedNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pulls, "REPLY_TIMEOUT_S", LONG_PULL_S)
    reconnections, heard = Reconnections(), asyncio.Event()
    client = await connect(NatsOptions(servers=[server.url]), on_reconnected=reconnections)
    try:
        puller = reconnections.puller = await unanswered_puller(client, heard)
        fetching = asyncio.create_task(puller.pull(5))
        async with asyncio.timeout(WAKE_LIMIT_S):
            await heard.wait()
        server.kill()
        server.start()
        async with asyncio.timeout(WAKE_LIMIT_S):
            await reconnections.seen.wait()
            fetched = await fetching
        await puller.close()
    finally:
        await client.close()

    assert (fetched, puller.faulted) == ([], False)


async def test_a_fault_after_the_reconnection_is_logged_and_the_connection_stays(
    server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    """A NATS error raised into nats-py there would count as a failed reconnection."""
    reconnected = asyncio.Event()

    def failing() -> None:
        reconnected.set()
        raise nats.errors.Error("a listener's fault")

    client = await connect(NatsOptions(servers=[server.url]), on_reconnected=failing)
    try:
        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)
        async with asyncio.timeout(WAKE_LIMIT_S):
            await reconnected.wait()
            await client.flush()
        connected = client.is_connected
    finally:
        await client.close()

    assert connected
    assert "a listener's fault" in caplog.text


async def test_no_waiting_request_is_queued_while_the_connection_is_away(
    server: EmbeddedNats,
) -> None:
    """nats-py would queue it until the reconnection, where it would pass for one lost, and
    the next would join it: a 10 s outage left four waiting on one type."""
    away, back = asyncio.Event(), asyncio.Event()

    async def on_away() -> None:
        away.set()

    async def on_back() -> None:
        back.set()

    client = await nats.connect(
        server.url, disconnected_cb=on_away, reconnected_cb=on_back, reconnect_time_wait=0.1
    )
    try:
        puller = await unanswered_puller(client, asyncio.Event())
        await asyncio.to_thread(server.kill)
        async with asyncio.timeout(WAKE_LIMIT_S):
            await away.wait()
        await puller.keep_waiting(30)
        sent_while_away = puller._waiting
        await asyncio.to_thread(server.start)
        async with asyncio.timeout(WAKE_LIMIT_S):
            await back.wait()
        await puller.keep_waiting(30)
        sent_once_back = puller._waiting
        await puller.close()
    finally:
        await client.close()

    assert sent_while_away is None
    assert sent_once_back is not None
