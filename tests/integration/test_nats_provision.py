"""provision_streams on a nats-server of its own, so the engine's stream names are free."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js import api
from nats.js.client import JetStreamContext

from adapters.nats.provision import provision_streams
from app.embedded import EmbeddedNats

pytestmark = pytest.mark.integration

DAY_S = 24 * 60 * 60


@pytest.fixture
async def fresh_js(tmp_path: Path) -> AsyncIterator[JetStreamContext]:
    server = EmbeddedNats(tmp_path / "nats")
    server.start()
    try:
        client = await nats.connect(server.url)
        yield client.jetstream()
        await client.close()
    finally:
        server.stop()


async def config(js: JetStreamContext, name: str) -> api.StreamConfig:
    return (await js.stream_info(name)).config


async def test_provision_creates_the_engine_streams_once(fresh_js: JetStreamContext) -> None:
    await provision_streams(fresh_js)
    await provision_streams(fresh_js)

    tasks = await config(fresh_js, "TASK_QUEUES")
    history = await config(fresh_js, "WORKFLOW_HISTORY")
    assert tasks.subjects == ["task.>"]
    assert tasks.retention == api.RetentionPolicy.WORK_QUEUE
    assert tasks.storage == api.StorageType.FILE
    assert tasks.max_age == 0
    assert tasks.duplicate_window == 120
    assert history.subjects == ["history.>"]
    assert history.retention == api.RetentionPolicy.LIMITS
    assert history.storage == api.StorageType.FILE
    assert history.duplicate_window == 5
    assert history.max_age == 30 * DAY_S


async def test_provision_leaves_an_existing_stream_as_it_is(fresh_js: JetStreamContext) -> None:
    await fresh_js.add_stream(
        name="TASK_QUEUES",
        subjects=["task.>"],
        retention=api.RetentionPolicy.WORK_QUEUE,
        description="the engine's own",
        max_msgs=1000,
    )
    before = await config(fresh_js, "TASK_QUEUES")

    await provision_streams(fresh_js)
    await provision_streams(fresh_js)

    assert await config(fresh_js, "TASK_QUEUES") == before
    assert (await config(fresh_js, "WORKFLOW_HISTORY")).subjects == ["history.>"]
