"""The engine's streams, created when absent (`--provision` and the embedded mode), and what
every creation of the bridge shares: the replicas asked, a cluster still forming.

A stream that exists is left exactly as it is, whatever its configuration: the DagNats server
owns it, and an update could undo settings it made on purpose.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
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
from domain.errors import BackendUnavailableError

log = logging.getLogger(__name__)

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

NO_SUITABLE_PEERS: Final = 10005
"""Fewer servers than the replicas asked: for now in a cluster still forming or with a node
down; a single server answers another error (replicas > 1 not supported), never retried."""
FORMING_PATIENCE: Final = timedelta(seconds=30)
"""How long start-up waits for a cluster to place what it creates before giving up."""
FORMING_RECHECK: Final = timedelta(milliseconds=500)


async def provision_streams(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create TASK_QUEUES and WORKFLOW_HISTORY unless they exist; never update them."""
    for config in ENGINE_STREAMS:
        await _create_unless_present(js, dataclasses.replace(config, num_replicas=replicas))


async def _create_unless_present(js: JetStreamContext, config: api.StreamConfig) -> None:
    """STREAM.CREATE never changes a stream: one with this config is a no-op, another refused."""
    what = f"provision stream {config.name}"
    with translated(what), placing(what):
        try:
            await js.add_stream(config)
            return
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
        existing = (await js.stream_info(config.name or "")).config
    warn_if_fewer_replicas(f"stream {config.name}", existing.num_replicas, config.num_replicas)


@contextmanager
def placing(what: str) -> Iterator[None]:
    """A creation the cluster cannot place yet is unavailable for now, not a fault."""
    try:
        yield
    except nats.js.errors.APIError as exc:
        if exc.err_code != NO_SUITABLE_PEERS:
            raise
        raise BackendUnavailableError(f"{what}: NATS cannot place it ({exc.description})") from exc


def warn_if_fewer_replicas(what: str, has: int | None, asked: int | None) -> None:
    """An existing stream or bucket is adopted as it is: an operator's config is never changed,
    only pointed out when it keeps fewer copies than asked."""
    if (has or 1) < (asked or 1):
        log.warning(
            "%s exists with %d replicas, fewer than the %d asked; left as it is",
            what,
            has or 1,
            asked or 1,
        )


async def while_cluster_forms(
    step: Callable[[], Awaitable[None]], *, patience: timedelta = FORMING_PATIENCE
) -> None:
    """Run a start-up step, and again while JetStream is unavailable (a new cluster answers
    nothing until it has elected its meta leader, and places nothing until its peers have
    joined), for `patience` at most; then its last error is raised."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience.total_seconds()
    while True:
        try:
            await step()
            return
        except BackendUnavailableError as exc:
            if loop.time() >= deadline:
                raise
            log.warning("JetStream not ready (%s); trying again", exc)
        # Another process's state, with no event to await.
        await asyncio.sleep(FORMING_RECHECK.total_seconds())
