"""The use cases on the NATS adapters, for tests that hold NATS to the memory backend's spec."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import attrs
import nats
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from adapters.codec import decode, encode
from adapters.memory.clock import SystemClock
from adapters.memory.ids import UuidIds
from adapters.nats.events import NatsEventLog
from adapters.nats.jetstream import JetStream
from adapters.nats.kv import (
    NatsBuckets,
    ensure_leases_bucket,
    ensure_polls_bucket,
    provision_buckets,
)
from adapters.nats.leases import NatsLeaseStore
from adapters.nats.polls import NatsPollAnswerStore
from adapters.nats.provision import provision_streams
from adapters.nats.queue import NatsTaskQueue
from adapters.nats.streams import NatsStreams
from adapters.wire import TASK_STREAM, consumer_filter, consumer_name
from domain.models import Event, TaskPayload, TaskType
from domain.services.simulator import EnqueueTask
from tests.factories import DrivesUseCases, use_cases

LEASE_BUCKET_TTL = timedelta(hours=1)


@attrs.define
class NatsHarness(DrivesUseCases):
    """The use cases wired to the NATS adapters on one connection."""

    nc: NatsClient
    js: JetStream
    clock: SystemClock = attrs.field(factory=SystemClock)
    queue: NatsTaskQueue = attrs.field(init=False)
    events: NatsEventLog = attrs.field(init=False)
    leases: NatsLeaseStore = attrs.field(init=False)
    enqueue: EnqueueTask = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.queue = NatsTaskQueue(self.nc, self.js, encode, lambda data: decode(data, TaskPayload))
        self.events = NatsEventLog(self.js, encode, lambda data: decode(data, Event))
        self.leases = NatsLeaseStore(self.js, clock=self.clock)
        ids = UuidIds()
        self.poll, self.resolve, _ = use_cases(
            queue=self.queue,
            events=self.events,
            leases=self.leases,
            buckets=NatsBuckets(self.js),
            streams=NatsStreams(self.nc),
            answers=NatsPollAnswerStore(self.js),
            clock=self.clock,
            ids=ids,
        )
        self.enqueue = EnqueueTask(publisher=self.queue, ids=ids)


async def open_harness(url: str) -> NatsHarness:
    nc = await nats.connect(url)
    js = JetStream(nc)
    await provision_streams(js)
    await provision_buckets(js)
    await ensure_leases_bucket(js, LEASE_BUCKET_TTL)
    await ensure_polls_bucket(js)
    return NatsHarness(nc, js)


async def close_harness(bridge: NatsHarness, task_type: TaskType) -> None:
    try:
        await bridge.queue.close()
        with contextlib.suppress(NotFoundError):  # no poll, no consumer
            await bridge.js.delete_consumer(TASK_STREAM, consumer_name(task_type))
        await bridge.js.purge_stream(TASK_STREAM, subject=consumer_filter(task_type))
    finally:
        await bridge.nc.drain()
