"""The engine's streams, created when absent (`--provision` and the embedded mode).

A stream that exists is left exactly as it is, whatever its configuration: the DagNats server
owns it, and an update could undo settings it made on purpose.
"""

from __future__ import annotations

from typing import Final

import nats.js.errors
from nats.js import api
from nats.js.client import JetStreamContext

from adapters.nats.errors import translated
from adapters.nats.jsapi import STREAM_NAME_IN_USE
from adapters.wire import (
    HISTORY_DUPLICATE_WINDOW,
    HISTORY_MAX_AGE,
    HISTORY_STREAM,
    HISTORY_SUBJECTS,
    TASK_STREAM,
    TASK_SUBJECTS,
)

ENGINE_STREAMS: Final = (
    api.StreamConfig(
        name=TASK_STREAM,
        subjects=[TASK_SUBJECTS],
        retention=api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE,
    ),
    api.StreamConfig(
        name=HISTORY_STREAM,
        subjects=[HISTORY_SUBJECTS],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        duplicate_window=HISTORY_DUPLICATE_WINDOW.total_seconds(),
        max_age=HISTORY_MAX_AGE.total_seconds(),
    ),
)
"""TASK_QUEUES keeps JetStream's default duplicate window (2 min) and no MaxAge."""


async def provision_streams(js: JetStreamContext) -> None:
    """Create TASK_QUEUES and WORKFLOW_HISTORY unless they exist; never update them."""
    for config in ENGINE_STREAMS:
        await _create_unless_present(js, config)


async def _create_unless_present(js: JetStreamContext, config: api.StreamConfig) -> None:
    """STREAM.CREATE never changes a stream: one with this config is a no-op, another refused."""
    with translated(f"provision stream {config.name}"):
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
