"""Wake-up latency: a task published while a poll waits, to that poll's answer."""

from __future__ import annotations

import asyncio
import time
from typing import Final

from nats.js.client import JetStreamContext

from adapters.nats.consumers import TypeConsumers
from adapters.wire import TASK_STREAM
from bench.load import BridgeClient
from bench.tasks import TaskPublisher

PARK_S: Final = 0.1
"""Time a waiting poll gets to reach the server before the probe publishes: nothing signals it."""
PROBE_TIMEOUT_MS: Final = 5000


async def bridge_wakeups(
    client: BridgeClient, publisher: TaskPublisher, batch: int, stop: asyncio.Event
) -> list[float]:
    """Seconds from publish to the answer of a long-poll of `batch` that waited, until `stop`.

    One bridge only: another replica's waiting pull could take the task for a poll that has
    already left it.
    """
    wakeups: list[float] = []
    while not stop.is_set():
        waiting = asyncio.create_task(client.poll(publisher.task_type, batch, PROBE_TIMEOUT_MS))
        await asyncio.sleep(PARK_S)
        start = time.perf_counter()
        await publisher.publish(1)
        tasks = await waiting
        wakeups.append(time.perf_counter() - start)
        await asyncio.gather(*(client.complete(task) for task in tasks))
    return wakeups


async def direct_wakeups(
    js: JetStreamContext, consumers: TypeConsumers, publisher: TaskPublisher, stop: asyncio.Event
) -> list[float]:
    """Seconds from publish to the answer of a nats-py fetch that waited, until `stop`.

    nats-py's fetch of a batch above one waits for the whole batch, so the probe fetches one
    task, as a direct worker that wants to wake at once would.
    """
    info = await consumers.ensure(publisher.task_type)
    sub = await js.pull_subscribe_bind(durable=info.name, stream=TASK_STREAM)
    wakeups: list[float] = []
    while not stop.is_set():
        waiting = asyncio.create_task(sub.fetch(1, timeout=PROBE_TIMEOUT_MS / 1000))
        await asyncio.sleep(PARK_S)
        start = time.perf_counter()
        await publisher.publish(1)
        msgs = await waiting
        wakeups.append(time.perf_counter() - start)
        await asyncio.gather(*(msg.ack_sync() for msg in msgs))
    await sub.unsubscribe()
    return wakeups
