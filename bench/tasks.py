"""Tasks as the engine publishes them, on task types no other phase touches."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import attrs
from nats.js.client import JetStreamContext

from adapters.codec import encode
from adapters.wire import MSG_ID_HEADER, TASK_STREAM, task_subject
from domain.models import RawJson, RunId, StepId, TaskPayload
from domain.protocol import queued_msg_id

PUBLISH_WINDOW = 256
"""Publishes awaited together: enough to fill a queue fast, few enough to keep order loose."""
PACE_TICK_S = 0.01
INPUT = RawJson(b'{"n":1}')


def fresh_type(label: str) -> str:
    """A task type of its own per phase, so leftovers and consumers never cross phases."""
    return f"bench-{label}-{uuid.uuid4().hex[:8]}"


@attrs.define
class TaskPublisher:
    """Publishes tasks of one type as the engine does (msg-id `<run>.<step>.queued`).

    Mutable on purpose: it numbers the runs it publishes.
    """

    js: JetStreamContext
    task_type: str
    _prefix: str = attrs.field(init=False, factory=lambda: uuid.uuid4().hex[:8])
    _published: int = attrs.field(init=False, default=0)

    async def publish(self, count: int) -> None:
        """`count` tasks, each acknowledged by JetStream before this returns."""
        for window in _windows(count, PUBLISH_WINDOW):
            await asyncio.gather(*(self._publish_one() for _ in range(window)))

    async def publish_paced(self, total: int, rate: float) -> None:
        """`total` tasks at about `rate` a second."""
        start = time.perf_counter()
        sent = 0
        while sent < total:
            due = min(total, int(rate * (time.perf_counter() - start)) + 1)
            await asyncio.gather(*(self._publish_one() for _ in range(due - sent)))
            sent = due
            await asyncio.sleep(PACE_TICK_S)  # the pace itself: a clock tick, not a condition

    async def _publish_one(self) -> None:
        self._published += 1
        run_id, step_id = RunId(f"r{self._prefix}-{self._published}"), StepId("s")
        payload = TaskPayload(run_id=run_id, step_id=step_id, input=INPUT)
        await self.js.publish(
            task_subject(self.task_type, run_id),
            encode(payload),
            stream=TASK_STREAM,
            headers={MSG_ID_HEADER: queued_msg_id(run_id, step_id)},
        )


def _windows(count: int, size: int) -> Iterator[int]:
    while count > 0:
        yield min(size, count)
        count -= size
