"""Read a task's saved checkpoint, as a native worker's LoadCheckpoint does."""

from __future__ import annotations

import attrs

from domain.models import RawJson, TaskId
from domain.ports import KeyValueBuckets
from domain.protocol import MAX_TASK_ID_BYTES, validate_kv_key
from domain.services.resolve import required


@attrs.frozen(kw_only=True)
class ReadCheckpoint:
    buckets: KeyValueBuckets

    async def __call__(self, task_id: TaskId) -> RawJson | None:
        """The saved value, or None when there is none. InvalidRequestError naming `task_id`
        when it cannot be a key of the bucket (the engine's task ids can, all of them)."""
        key = validate_kv_key(task_id, "task_id", MAX_TASK_ID_BYTES)
        bucket = required(await self.buckets.checkpoints(), "checkpoint")
        entry = await bucket.get(key)
        return RawJson(entry.value) if entry is not None and entry.value else None
