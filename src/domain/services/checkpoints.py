"""Read a task's saved checkpoint, as a native worker's LoadCheckpoint does."""

from __future__ import annotations

import attrs

from domain.models import RawJson, TaskId
from domain.ports import KeyValueBuckets
from domain.services.resolve import required


@attrs.frozen(kw_only=True)
class ReadCheckpoint:
    buckets: KeyValueBuckets

    async def __call__(self, task_id: TaskId) -> RawJson | None:
        """The saved value, or None when there is none."""
        bucket = required(await self.buckets.checkpoints(), "checkpoint")
        entry = await bucket.get(task_id)
        return RawJson(entry.value) if entry is not None and entry.value else None
