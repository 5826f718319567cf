"""TypePuller against a scripted consumer on a real nats-server: the pull statuses JetStream
sends only in a cluster or while a server stops, each answered here as JetStream words it.

The consumer's pull subject has no JetStream consumer behind it; the test's responder hears
each pull request and answers it with a raw status line (`NATS/1.0 409 Leadership Change`),
which nats-py cannot publish, over a connection of its own speaking the NATS protocol, or
with a plain message standing for a task.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Final
from urllib.parse import urlsplit

import attrs
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from adapters.nats import pulls
from adapters.nats.inbox import Inbox
from adapters.nats.jsapi import pull_subject
from adapters.nats.pulls import TypePuller
from app.embedded import EmbeddedNats
from domain.errors import BackendError
from tests.integration.jetstream import unique

pytestmark = pytest.mark.integration

STREAM: Final = "SCRIPTED"
ANSWER_TIMEOUT_S: Final = 5.0


async def send_status(server: EmbeddedNats, subject: str, status: str) -> None:
    """Publish a message that is only a status line, as JetStream ends a pull request."""
    address = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        await reader.readline()  # INFO
        header = f"NATS/1.0 {status}\r\n\r\n".encode()
        writer.write(b'CONNECT {"verbose":false,"headers":true,"protocol":1}\r\n')
        size = len(header)
        writer.write(b"HPUB %s %d %d\r\n%s\r\n" % (subject.encode(), size, size, header))
        writer.write(b"PING\r\n")
        await writer.drain()
        assert await reader.readline() == b"PONG\r\n"
    finally:
        writer.close()
        await writer.wait_closed()


@attrs.define
class ScriptedConsumer:
    """Hears the pull requests of `consumer`, and answers each with the next item of the
    script (none once it runs out): a status line, several, or a task message with this
    body. Mutable on purpose: what it heard."""

    server: EmbeddedNats
    client: NatsClient
    consumer: str
    script: list[str | tuple[str, ...] | bytes]
    requests: asyncio.Queue[dict[str, object]] = attrs.field(factory=asyncio.Queue)

    async def answer(self, msg: Msg) -> None:
        self.requests.put_nowait(json.loads(msg.data))  # heard before its answer can land
        if not self.script:
            return
        match self.script.pop(0):
            case str(status):
                await send_status(self.server, msg.reply, status)
            case tuple(statuses):
                for status in statuses:
                    await send_status(self.server, msg.reply, status)
            case bytes(body):
                # Not JetStream's ack subject, which the server keeps to itself.
                await self.client.publish(msg.reply, body, reply=f"{self.consumer}.ack")

    async def next_request(self) -> dict[str, object]:
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            return await self.requests.get()

    async def heard_until_marker(self) -> list[dict[str, object]]:
        """The requests heard before a marker sent now over the puller's connection, which
        is heard after all that the puller sent before it."""
        marker = {"marker": True}
        await self.client.publish(pull_subject(STREAM, self.consumer), json.dumps(marker).encode())
        heard: list[dict[str, object]] = []
        while (request := await self.next_request()) != marker:
            heard.append(request)
        return heard


@pytest.fixture
async def consumer(nats_server: EmbeddedNats, nats_client: NatsClient) -> ScriptedConsumer:
    scripted = ScriptedConsumer(nats_server, nats_client, unique("scripted-"), [])
    await nats_client.subscribe(pull_subject(STREAM, scripted.consumer), cb=scripted.answer)
    await nats_client.flush()
    return scripted


@pytest.fixture(autouse=True)
def long_waiting_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiting requests that outlive ANSWER_TIMEOUT_S, so that the wake-up of one whose end
    never comes (at its deadline) cannot pass for what a test awaits."""
    monkeypatch.setattr(pulls, "LONG_PULL_S", 60.0)


@pytest.fixture
def woken() -> asyncio.Event:
    """Set by the puller's `on_arrival`: what wakes the waiters."""
    return asyncio.Event()


@pytest.fixture
async def puller(
    nats_client: NatsClient, consumer: ScriptedConsumer, woken: asyncio.Event
) -> AsyncIterator[TypePuller]:
    started = TypePuller(
        nats_client,
        STREAM,
        consumer.consumer,
        timedelta(seconds=30),
        woken.set,
        settlements=Inbox(nats_client),
    )
    await started.start()
    yield started
    await started.close()


@pytest.mark.parametrize("status", ["409 Leadership Change", "409 Server Shutdown"])
async def test_a_fetch_ended_by_a_passing_conflict_returns_at_once_and_keeps_the_puller(
    puller: TypePuller, consumer: ScriptedConsumer, status: str
) -> None:
    consumer.script = [status, "404 No Messages"]

    first = await puller.pull(5)
    second = await puller.pull(5)

    assert (first, second, puller.faulted) == ([], [], False)
    assert [(await consumer.next_request())["no_wait"] for _ in range(2)] == [True, True]


async def test_a_fetch_ended_by_a_deleted_consumer_is_a_fault(
    puller: TypePuller, consumer: ScriptedConsumer
) -> None:
    consumer.script = ["409 Consumer Deleted"]

    with pytest.raises(BackendError, match="409 Consumer Deleted"):
        await puller.pull(5)
    assert puller.faulted


@pytest.mark.parametrize("status", ["409 Leadership Change", "409 Server Shutdown"])
async def test_a_waiting_request_ended_by_a_passing_conflict_wakes_the_waiters_to_ask_again(
    puller: TypePuller, consumer: ScriptedConsumer, woken: asyncio.Event, status: str
) -> None:
    consumer.script = [status]
    until = asyncio.get_running_loop().time() + 30

    with puller.waited_on(until):
        await puller.keep_waiting(30)
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            await woken.wait()
        await puller.keep_waiting(30)  # what each waiter does when woken
        await consumer.next_request()
        again = await consumer.next_request()

    assert ("no_wait" in again, puller.faulted) == (False, False)


async def test_a_waiting_request_ended_by_a_deleted_consumer_wakes_the_waiters(
    puller: TypePuller, consumer: ScriptedConsumer, woken: asyncio.Event
) -> None:
    consumer.script = ["409 Consumer Deleted"]
    until = asyncio.get_running_loop().time() + 30

    with puller.waited_on(until):
        await puller.keep_waiting(30)
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            await woken.wait()

    assert puller.faulted
    with pytest.raises(BackendError, match="409 Consumer Deleted"):
        await puller.keep_waiting(30)


async def test_passing_conflicts_in_a_row_wake_the_waiters_after_pauses_that_grow(
    puller: TypePuller, consumer: ScriptedConsumer, woken: asyncio.Event
) -> None:
    """Where the puller renewed at once, as fast as a server answering so replied."""
    in_a_row = 4
    consumer.script = ["409 Leadership Change"] * in_a_row
    loop = asyncio.get_running_loop()
    pauses: list[float] = []

    with puller.waited_on(loop.time() + 30):
        for _ in range(in_a_row):
            woken.clear()
            asked = loop.time()
            await puller.keep_waiting(30)  # what each waiter does when woken
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                await woken.wait()
            pauses.append(loop.time() - asked)

    assert consumer.requests.qsize() == in_a_row  # the waiters' requests, none of its own
    assert [p >= pulls.CONFLICT_PAUSE_S * 2**n for n, p in enumerate(pauses)] == [True] * 4
    assert not puller.faulted


async def test_a_server_shutdown_wakes_the_waiters_after_the_longest_pause(
    puller: TypePuller, consumer: ScriptedConsumer, woken: asyncio.Event
) -> None:
    """A request sent sooner would reach the stopping server once its JetStream is gone."""
    consumer.script = ["409 Server Shutdown"]
    loop = asyncio.get_running_loop()

    with puller.waited_on(loop.time() + 30):
        asked = loop.time()
        await puller.keep_waiting(30)
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            await woken.wait()
        paused = loop.time() - asked

    assert (paused >= pulls.CONFLICT_PAUSE_MAX_S, puller.faulted) == (True, False)


async def test_a_reconnection_leaves_a_request_sent_since_it_waiting(
    puller: TypePuller, consumer: ScriptedConsumer, woken: asyncio.Event
) -> None:
    """Only the requests sent before the last reconnection can have been lost with it."""
    with puller.waited_on(asyncio.get_running_loop().time() + 30):
        await puller.keep_waiting(30)
        await consumer.next_request()
        puller.reconnected()
        await puller.keep_waiting(30)  # what each waiter does when woken
        await puller.pull(5)

    assert (woken.is_set(), await consumer.heard_until_marker()) == (True, [])


async def test_any_other_end_between_passing_conflicts_starts_their_count_again(
    puller: TypePuller, consumer: ScriptedConsumer
) -> None:
    consumer.script = [
        "409 Leadership Change",
        "409 Server Shutdown",
        "404 No Messages",
        "409 Leadership Change",
    ]

    outcomes = [await puller.pull(5) for _ in range(4)]

    assert (outcomes, puller._passing_conflicts) == ([[]] * 4, 1)


async def test_a_message_between_passing_conflicts_starts_their_count_again(
    puller: TypePuller, consumer: ScriptedConsumer, woken: asyncio.Event
) -> None:
    consumer.script = ["409 Leadership Change", b"task", "409 Leadership Change"]

    with puller.waited_on(asyncio.get_running_loop().time() + 30):
        for _ in range(3):
            woken.clear()
            await puller.keep_waiting(30)
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                await woken.wait()

    assert (puller._passing_conflicts, puller.holding) == (1, True)


async def test_a_second_status_for_a_request_already_ended_is_ignored(
    puller: TypePuller, consumer: ScriptedConsumer, woken: asyncio.Event
) -> None:
    """A server shutting down ends a waiting request, and its successor as leader ends it
    again (seen on a cluster)."""
    consumer.script = [("409 Server Shutdown", "409 Leadership Change")]

    with puller.waited_on(asyncio.get_running_loop().time() + 30):
        await puller.keep_waiting(30)
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            await woken.wait()

    assert puller._passing_conflicts == 1
