"""The embedded nats-server from the wheel: JetStream on, loopback only."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NatsClient

from app.embedded import EmbeddedNats

pytestmark = pytest.mark.integration


async def test_the_embedded_server_serves_jetstream_on_loopback(
    nats_server: EmbeddedNats, nats_client: NatsClient
) -> None:
    info = await nats_client.jetstream().account_info()

    assert nats_server.url.startswith("nats://127.0.0.1:")
    assert info.limits is not None
