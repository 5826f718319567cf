"""The engine's streams, shared by the tests of one nats-server, each test in its own corner.

Other tests (a served bridge with `--provision`) create TASK_QUEUES and WORKFLOW_HISTORY on the
same server, so no test can have a `task.>` or `history.>` stream of its own. Each test takes a
fresh prefix instead: its task types (and hence consumers, subjects and msg-ids) and its run
ids start with it. At the end its consumers are deleted and its messages purged.

"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import attrs
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from adapters.codec import decode, encode
from adapters.nats.jetstream import JetStream
from adapters.nats.provision import provision_streams
from adapters.nats.queue import NatsTaskQueue
from adapters.wire import HISTORY_STREAM, TASK_STREAM, history_subject
from domain.models import Event, RunId, TaskPayload, TaskType


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def decode_task(data: bytes) -> TaskPayload:
    return decode(data, TaskPayload)


def decode_event(data: bytes) -> Event:
    return decode(data, Event)


@attrs.frozen
class TaskStream:
    """TASK_QUEUES as one test sees it: the subjects under its prefix."""

    name: str
    prefix: str

    @property
    def subjects(self) -> str:
        return f"task.{self.prefix}.>"

    @property
    def run_id(self) -> RunId:
        """A run id of this test's own, so msg-ids never meet another test's in the window."""
        return RunId(f"run-{self.prefix}")

    def type(self, suffix: str = "email") -> TaskType:
        """A task type of this test's own."""
        return TaskType(f"{self.prefix}.{suffix}")


@asynccontextmanager
async def task_stream(js: JetStreamContext) -> AsyncIterator[TaskStream]:
    """TASK_QUEUES (provisioned when absent) under a fresh prefix, cleaned up at the end."""
    await provision_streams(js)
    stream = TaskStream(name=TASK_STREAM, prefix=unique("q"))
    try:
        yield stream
    finally:
        for info in await js.consumers_info(stream.name):
            if (info.config.filter_subject or "").startswith(f"task.{stream.prefix}."):
                await js.delete_consumer(stream.name, info.name)
        await js.purge_stream(stream.name, subject=stream.subjects)


@asynccontextmanager
async def history_stream(js: JetStreamContext, *run_ids: RunId) -> AsyncIterator[str]:
    """WORKFLOW_HISTORY (provisioned when absent); the runs' events are purged at the end."""
    await provision_streams(js)
    try:
        yield HISTORY_STREAM
    finally:
        for run_id in run_ids:
            await js.purge_stream(HISTORY_STREAM, subject=history_subject(run_id))


async def stored(js: JetStreamContext, stream: str, subjects: str) -> int:
    """How many messages `stream` holds on `subjects`."""
    info = await js.stream_info(stream, subjects_filter=subjects)
    return sum((info.state.subjects or {}).values())


@asynccontextmanager
async def task_queue(
    nc: NatsClient, stream: TaskStream, ack_wait: timedelta = timedelta(minutes=5)
) -> AsyncIterator[NatsTaskQueue]:
    """A NatsTaskQueue on `stream`, closed at the end."""
    queue = NatsTaskQueue(
        nc, JetStream(nc), encode, decode_task, stream=stream.name, consumer_ack_wait=ack_wait
    )
    try:
        yield queue
    finally:
        await queue.close()
