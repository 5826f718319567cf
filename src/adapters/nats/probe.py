"""Readiness of the NATS backend: connected, and JetStream answering."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Final

import attrs
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from adapters.nats.connection import lost_for_good
from domain.errors import BackendUnavailableError

PROBE_TIMEOUT: Final = timedelta(seconds=1)


@attrs.frozen
class NatsProbe:
    """BackendProbe: passes only while the client is connected and JetStream answers an
    account-info request within `timeout`; any failure is BackendUnavailableError."""

    nc: NatsClient
    js: JetStreamContext
    timeout: timedelta = attrs.field(default=PROBE_TIMEOUT, kw_only=True)

    def lost_for_good(self) -> str | None:
        return lost_for_good(self.nc)

    async def check(self) -> None:
        if not self.nc.is_connected:
            raise BackendUnavailableError("NATS is not connected")
        try:
            async with asyncio.timeout(self.timeout.total_seconds()):
                await self.js.account_info()
        # A JetStream error (disabled, no quorum, ...) also means it cannot serve requests.
        except (nats.errors.Error, TimeoutError) as exc:
            raise BackendUnavailableError(
                f"JetStream did not answer: {type(exc).__name__}"
            ) from exc
