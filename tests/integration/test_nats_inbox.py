"""`Inbox.request` answers as nats-py's `Client.request` does, on a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from adapters.nats.inbox import SWEEP_S, Inbox
from app.embedded import EmbeddedNats
from tests.integration.kv_helpers import bucket_name

pytestmark = pytest.mark.integration

LOADED_SLACK_S = 1.0
"""What a loaded machine may add to a timeout's sweep before the request's task runs again."""


@pytest.fixture
async def echo(nats_client: NatsClient) -> AsyncIterator[str]:
    """A subject whose responder answers each request with its payload and `k` header."""
    subject = f"echo.{bucket_name('inbox')}"

    async def answer(msg: Msg) -> None:
        await msg.respond(msg.data + (msg.headers or {}).get("k", "").encode())

    subscription = await nats_client.subscribe(subject, cb=answer)
    yield subject
    await subscription.unsubscribe()


async def test_concurrent_requests_each_get_their_own_reply(
    nats_client: NatsClient, echo: str
) -> None:
    inbox = Inbox(nats_client)
    replies = await asyncio.gather(
        *(
            inbox.request(echo, str(n).encode(), timeout=5, headers={"k": f"-{n}"})
            for n in range(200)
        )
    )
    assert [reply.data for reply in replies] == [f"{n}-{n}".encode() for n in range(200)]


async def test_nobody_listening_is_no_responders_as_for_nats_py(nats_client: NatsClient) -> None:
    subject = f"nobody.{bucket_name('inbox')}"
    with pytest.raises(nats.errors.NoRespondersError):
        await nats_client.request(subject, b"", timeout=5)
    with pytest.raises(nats.errors.NoRespondersError):
        await Inbox(nats_client).request(subject, b"", timeout=5)


async def test_an_unanswered_request_times_out_and_the_next_is_answered(
    nats_client: NatsClient, echo: str
) -> None:
    heard = asyncio.Event()

    async def never_answer(_: Msg) -> None:
        heard.set()

    silent = f"silent.{bucket_name('inbox')}"
    subscription = await nats_client.subscribe(silent, cb=never_answer)
    inbox = Inbox(nats_client)
    loop = asyncio.get_running_loop()
    try:
        sent = loop.time()
        with pytest.raises(nats.errors.TimeoutError):
            await inbox.request(silent, b"", timeout=0.1)
        waited = loop.time() - sent
    finally:
        await subscription.unsubscribe()
    assert heard.is_set()
    assert 0.1 <= waited <= 0.1 + SWEEP_S + LOADED_SLACK_S
    assert (await inbox.request(echo, b"after", timeout=5)).data == b"after"


async def test_waiting_requests_time_out_each_at_its_own_time_while_others_are_answered(
    nats_client: NatsClient, echo: str
) -> None:
    silent = f"silent.{bucket_name('inbox')}"
    inbox = Inbox(nats_client)
    loop = asyncio.get_running_loop()
    timed_out: dict[float, float] = {}

    async def unanswered(timeout: float) -> None:
        sent = loop.time()
        with pytest.raises(nats.errors.TimeoutError):
            await inbox.request(silent, b"", timeout=timeout)
        timed_out[timeout] = loop.time() - sent

    subscription = await nats_client.subscribe(silent)
    try:
        waiting = [asyncio.create_task(unanswered(timeout)) for timeout in (0.6, 0.1, 0.3)]
        answered = [await inbox.request(echo, b"%d" % n, timeout=5) for n in range(20)]
        await asyncio.gather(*waiting)
    finally:
        await subscription.unsubscribe()

    assert [reply.data for reply in answered] == [b"%d" % n for n in range(20)]
    assert all(
        timeout <= took <= timeout + SWEEP_S + LOADED_SLACK_S for timeout, took in timed_out.items()
    ), timed_out
    assert sorted(timed_out, key=timed_out.__getitem__) == [0.1, 0.3, 0.6]
    assert (await inbox.request(echo, b"after", timeout=5)).data == b"after"


@pytest.fixture
async def counter(nats_client: NatsClient) -> AsyncIterator[str]:
    """A subject whose responder answers a request for n with the replies 1..n, then "end",
    then one more reply that comes too late to count."""
    subject = f"count.{bucket_name('inbox')}"

    async def answer(msg: Msg) -> None:
        for n in range(1, int(msg.data) + 1):
            await msg.respond(b"%d" % n)
        await msg.respond(b"end")
        await msg.respond(b"late")

    subscription = await nats_client.subscribe(subject, cb=answer)
    yield subject
    await subscription.unsubscribe()


def is_end(msg: Msg) -> bool:
    return msg.data == b"end"


async def test_each_request_of_many_replies_gets_its_own_up_to_the_last(
    nats_client: NatsClient, counter: str, echo: str
) -> None:
    inbox = Inbox(nats_client)

    many, single = await asyncio.gather(
        asyncio.gather(
            *(inbox.request_many(counter, b"%d" % n, timeout=5, last=is_end) for n in range(30))
        ),
        asyncio.gather(*(inbox.request(echo, b"%d" % n, timeout=5) for n in range(30))),
    )

    assert [[reply.data for reply in replies] for replies in many] == [
        [b"%d" % k for k in range(1, n + 1)] + [b"end"] for n in range(30)
    ]
    assert [reply.data for reply in single] == [b"%d" % n for n in range(30)]


async def test_a_request_of_many_replies_whose_last_never_comes_times_out(
    nats_client: NatsClient, counter: str
) -> None:
    inbox = Inbox(nats_client)

    with pytest.raises(nats.errors.TimeoutError):
        await inbox.request_many(counter, b"3", timeout=0.1, last=lambda msg: msg.data == b"4")

    assert [r.data for r in await inbox.request_many(counter, b"1", timeout=5, last=is_end)] == [
        b"1",
        b"end",
    ]


async def test_a_request_of_many_replies_leaves_nothing_behind_however_it_ends(
    nats_client: NatsClient, counter: str
) -> None:
    inbox = Inbox(nats_client)
    nobody = f"nobody.{bucket_name('inbox')}"

    with pytest.raises(nats.errors.TimeoutError):
        await inbox.request_many(counter, b"2", timeout=0.1, last=lambda msg: msg.data == b"9")
    with pytest.raises(nats.errors.NoRespondersError):
        await inbox.request_many(nobody, b"", timeout=5, last=is_end)
    cancelled = asyncio.create_task(
        inbox.request_many(counter, b"2", timeout=5, last=lambda msg: msg.data == b"9")
    )
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await inbox.request_many(counter, b"1", timeout=5, last=is_end)

    assert (inbox._streams, inbox._waiting, inbox._deadlines) == ({}, {}, {})


async def test_a_request_weighs_its_headers_against_max_payload_to_the_byte(
    nats_server: EmbeddedNats,
) -> None:
    """At the limit the server takes it; a byte over, the request is refused before it is
    sent. A connection of its own: were the weight short, the server's -ERR would close it."""
    nc = await nats.connect(nats_server.url)
    try:
        subject = f"size.{bucket_name('inbox')}"

        async def answer(msg: Msg) -> None:
            await msg.respond(str(len(msg.data)).encode())

        await nc.subscribe(subject, cb=answer)
        headers = {"Nats-Msg-Id": "r1.s1.step.completed.1", " traceparent ": " 00-0af7-01 "}
        # NATS/1.0␍␊ (10), Nats-Msg-Id: r1.s1.step.completed.1␍␊ (37), the trimmed
        # traceparent: 00-0af7-01␍␊ (25), ␍␊ (2).
        at_limit = b"x" * (nc.max_payload - 74)
        inbox = Inbox(nc)

        answered = await inbox.request(subject, at_limit, timeout=5, headers=headers)
        with pytest.raises(nats.errors.MaxPayloadError):
            await inbox.request(subject, at_limit + b"x", timeout=5, headers=headers)

        assert (answered.data, nc.is_connected) == (str(len(at_limit)).encode(), True)
    finally:
        await nc.close()
