"""The protocol state machine of the unit suite, run on the NATS adapters: one spec, two backends.

Time here is the real server's, so the rule that advances a manual clock is left out; AckWait
expiry and NAK delays are pinned by the NATS queue tests instead.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import timedelta
from typing import Any

import attrs
import nats
import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from adapters.codec import decode, encode
from adapters.memory.clock import SystemClock
from adapters.memory.ids import UuidIds
from adapters.nats.events import NatsEventLog
from adapters.nats.kv import NatsBuckets, ensure_leases_bucket, provision_buckets
from adapters.nats.leases import NatsLeaseStore
from adapters.nats.provision import provision_streams
from adapters.nats.queue import NatsTaskQueue
from adapters.nats.streams import NatsStreams
from adapters.wire import TASK_STREAM, consumer_filter, consumer_name
from app.embedded import EmbeddedNats
from domain.models import Event, RunId, TaskPayload, TaskType
from domain.services.simulator import EnqueueTask
from tests.factories import DrivesUseCases, use_cases
from tests.unit.test_protocol_machine import ProtocolMachine

pytestmark = pytest.mark.integration

LEASE_BUCKET_TTL = timedelta(hours=1)


@attrs.define
class NatsHarness(DrivesUseCases):
    """The use cases wired to the NATS adapters on one connection."""

    nc: NatsClient
    js: JetStreamContext
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
        self.poll, self.resolve = use_cases(
            queue=self.queue,
            events=self.events,
            leases=self.leases,
            buckets=NatsBuckets(self.js),
            streams=NatsStreams(self.nc),
            clock=self.clock,
            ids=ids,
        )
        self.enqueue = EnqueueTask(publisher=self.queue, ids=ids)


async def open_harness(url: str) -> NatsHarness:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await provision_streams(js)
    await provision_buckets(js)
    await ensure_leases_bucket(js, LEASE_BUCKET_TTL)
    return NatsHarness(nc, js)


async def close_harness(bridge: NatsHarness, task_type: TaskType) -> None:
    try:
        await bridge.queue.close()
        with contextlib.suppress(NotFoundError):  # no poll, no consumer
            await bridge.js.delete_consumer(TASK_STREAM, consumer_name(task_type))
        await bridge.js.purge_stream(TASK_STREAM, subject=consumer_filter(task_type))
    finally:
        await bridge.nc.drain()


class NatsProtocolMachine(ProtocolMachine):
    url = ""

    def __init__(self) -> None:
        prefix = uuid.uuid4().hex[:10]
        # Each example has a corner of its own on the shared server: task type and run ids.
        self.task_type = TaskType(f"m{prefix}.work")
        self.run_prefix = f"m{prefix}-r"
        super().__init__()

    def make_bridge(self) -> Any:
        return self.run(open_harness(self.url))

    def teardown(self) -> None:
        self.run(close_harness(self.bridge, self.task_type))
        super().teardown()

    def advance(self, seconds: float) -> None:
        """Not a rule here: the server's clock cannot be moved."""

    def msg_ids(self, run_id: RunId) -> list[str]:
        """JetStream itself drops a repeated msg-id within the window; nothing to count."""
        return []


def test_the_protocol_holds_on_the_nats_backend(nats_server: EmbeddedNats) -> None:
    NatsProtocolMachine.url = nats_server.url

    run_state_machine_as_test(
        NatsProtocolMachine, settings=settings(max_examples=25, stateful_step_count=20)
    )
