"""NatsProbe: ready only while connected and JetStream answers."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from adapters.nats.connection import NatsOptions, close, connect, lost_for_good
from adapters.nats.probe import NatsProbe
from app.embedded import EmbeddedNats
from domain.errors import BackendUnavailableError
from domain.ports import BackendProbe
from tests.integration.kv_helpers import until

pytestmark = pytest.mark.integration


async def test_a_connected_client_with_jetstream_is_ready(nats_client: NatsClient) -> None:
    probe: BackendProbe = NatsProbe(nats_client, nats_client.jetstream())

    await probe.check()


async def test_a_closed_client_is_not_ready(nats_server: EmbeddedNats) -> None:
    client = await nats.connect(nats_server.url)
    await client.close()

    with pytest.raises(BackendUnavailableError, match="not connected"):
        await NatsProbe(client, client.jetstream()).check()


async def test_a_client_whose_server_is_gone_is_not_ready(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    gone = asyncio.Event()

    async def disconnected() -> None:
        gone.set()

    client = await nats.connect(server.url, disconnected_cb=disconnected, reconnect_time_wait=0.1)
    probe = NatsProbe(client, client.jetstream())
    await probe.check()
    server.kill()
    await gone.wait()

    try:
        with pytest.raises(BackendUnavailableError):
            await probe.check()
    finally:
        await client.close()


async def test_a_jetstream_nobody_serves_is_not_ready(nats_client: NatsClient) -> None:
    unserved = nats_client.jetstream(prefix="$NOBODY.API")

    with pytest.raises(BackendUnavailableError, match="did not answer"):
        await NatsProbe(nats_client, unserved).check()


async def test_a_jetstream_that_does_not_answer_in_time_is_not_ready(
    nats_client: NatsClient,
) -> None:
    async def never_answer(_: Msg) -> None:
        """Take the request, so it has a responder, and let it time out."""

    silent = await nats_client.subscribe("$SILENT.API.INFO", cb=never_answer)
    probe = NatsProbe(
        nats_client,
        nats_client.jetstream(prefix="$SILENT.API"),
        timeout=timedelta(milliseconds=100),
    )

    try:
        with pytest.raises(BackendUnavailableError, match="TimeoutError"):
            await probe.check()
    finally:
        await silent.unsubscribe()


async def test_a_client_the_server_answered_with_an_error_is_lost_for_good(
    nats_server: EmbeddedNats,
) -> None:
    """nats-py weighs only the payload against max_payload; the server, also the headers,
    and its -ERR has nats-py close the connection, never to reconnect."""
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    client = await nats.connect(nats_server.url, closed_cb=on_closed, max_reconnect_attempts=-1)
    probe = NatsProbe(client, client.jetstream())
    before = probe.lost_for_good()

    await client.publish("over.limit", b"x" * client.max_payload, headers={"k": "v"})
    async with asyncio.timeout(5):
        await closed.wait()

    assert before is None
    assert probe.lost_for_good() == (
        "the NATS connection closed for good (nats: maximum payload violation)"
    )


async def test_a_connection_the_bridge_closes_after_a_reconnection_is_not_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """nats-py keeps the error of a failed reconnection attempt as its last error once it has
    reconnected: the bridge's own close at shutdown is not taken for a lost connection."""
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    reconnected = asyncio.Event()
    client = await connect(NatsOptions(servers=[server.url]), reconnected.set)
    try:
        await asyncio.to_thread(server.stop)

        async def refused() -> bool:
            return client.last_error is not None

        await until(refused, within_s=10)
        await asyncio.to_thread(server.start)
        async with asyncio.timeout(10):
            await reconnected.wait()
        with caplog.at_level(logging.INFO, logger="adapters.nats.connection"):
            await close(client)
    finally:
        server.stop()

    closes = [(r.levelname, r.getMessage()) for r in caplog.records if "closed" in r.getMessage()]
    assert (client.last_error is not None, lost_for_good(client)) == (True, None)
    assert closes == [("INFO", "NATS connection closed")]
