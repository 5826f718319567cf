"""How the engine publishes a task, shared by the queues of both backends."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from domain.models import RunId, TaskPayload, TaskType
from domain.tracing import task_trace, trace_headers


class RawTaskPublisher(Protocol):
    @property
    def encode(self) -> Callable[[TaskPayload], bytes]: ...

    async def publish_raw(
        self,
        task_type: TaskType,
        payload: bytes,
        *,
        run_id: RunId,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> None: ...


async def publish_as_the_engine(
    queue: RawTaskPublisher, task_type: TaskType, task: TaskPayload, *, msg_id: str
) -> None:
    """The encoded task on `task.<type>.<run>`, its trace context in the W3C headers too."""
    await queue.publish_raw(
        task_type,
        queue.encode(task),
        run_id=task.run_id,
        msg_id=msg_id,
        headers=trace_headers(task_trace(task)),
    )
