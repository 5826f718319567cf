"""Helpers for tests against real JetStream KV buckets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta

from nats.js.api import KeyValueConfig

from adapters.nats.jetstream import JetStream
from adapters.nats.kv import WATCH_IDLE, NatsKeyValue, open_bucket

POLL_INTERVAL_S = 0.02


def bucket_name(prefix: str = "test") -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@asynccontextmanager
async def fresh_bucket(
    js: JetStream,
    *,
    ttl: timedelta | None = None,
    direct: bool = True,
    watch_idle: timedelta = WATCH_IDLE,
) -> AsyncIterator[NatsKeyValue]:
    """A new uuid-named bucket, deleted on the way out."""
    name = bucket_name()
    await js.create_key_value(
        KeyValueConfig(bucket=name, ttl=ttl.total_seconds() if ttl else None, direct=direct)
    )
    try:
        bound = await open_bucket(js, name, watch_idle=watch_idle)
        assert bound is not None
        yield bound
    finally:
        await js.delete_key_value(name)


def lease_bucket(js: JetStream) -> AbstractAsyncContextManager[NatsKeyValue]:
    """A fresh bucket as ensure_leases_bucket makes it: no direct gets, a TTL for garbage only."""
    return fresh_bucket(js, ttl=timedelta(hours=1), direct=False)


async def until(condition: Callable[[], Awaitable[bool]], within_s: float = 5.0) -> None:
    """Poll until `condition` holds, for server-side effects that no event announces."""
    async with asyncio.timeout(within_s):
        while not await condition():  # noqa: ASYNC110 - the server announces nothing
            await asyncio.sleep(POLL_INTERVAL_S)


async def consumer_count(kv: NatsKeyValue) -> int:
    """Consumers on the bucket's stream: each open watch holds one."""
    info = await kv.js.stream_info(kv.stream)
    return info.state.consumer_count
