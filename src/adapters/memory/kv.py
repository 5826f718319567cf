"""NATS KV buckets in memory: per-bucket revisions, delete markers, TTL, waiting for a put."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import attrs

from adapters.memory.payloads import require_within_max_payload
from adapters.memory.waiting import Broadcast, wait_or_timeout
from adapters.wire import CHECKPOINTS_BUCKET, SIGNALS_BUCKET, WORKERS_BUCKET, WORKERS_TTL
from domain.models import KvEntry
from domain.ports import Clock
from domain.protocol import MAX_KV_KEY_BYTES, validate_kv_key


@attrs.frozen
class _Record:
    entry: KvEntry
    deleted: bool


@attrs.define
class MemoryKeyValue:
    """One KV bucket. Mutable on purpose: it is the bucket.

    Revisions are per bucket and a delete consumes one, as on NATS. With a `ttl`, an entry
    reads as absent once it is `ttl` old.
    """

    clock: Clock
    bucket: str = attrs.field(default="name", kw_only=True)
    ttl: timedelta | None = attrs.field(default=None, kw_only=True)
    _latest: dict[str, _Record] = attrs.field(init=False, factory=dict)
    _revision: int = attrs.field(init=False, default=0)
    _puts: Broadcast[KvEntry] = attrs.field(init=False, factory=Broadcast)

    async def get(self, key: str) -> KvEntry | None:
        validate_kv_key(key, "KV key", MAX_KV_KEY_BYTES)
        record = self._latest.get(key)
        if record is None or record.deleted or self._expired(record.entry):
            return None
        return record.entry

    async def get_many(self, keys: Sequence[str]) -> dict[str, KvEntry]:
        found = {key: await self.get(key) for key in keys}
        return {key: entry for key, entry in found.items() if entry is not None}

    async def put(self, key: str, value: bytes) -> int:
        validate_kv_key(key, "KV key", MAX_KV_KEY_BYTES)
        require_within_max_payload(f"put {key} into KV {self.bucket}", value)
        entry = self._store(key, value, deleted=False)
        self._puts.notify(entry)
        return entry.revision

    async def delete(self, key: str) -> None:
        """Leave a delete marker; it consumes a revision but wakes no waiter."""
        validate_kv_key(key, "KV key", MAX_KV_KEY_BYTES)
        self._store(key, b"", deleted=True)

    async def keys(self) -> list[str]:
        return [key for key in self._latest if await self.get(key) is not None]

    async def wait_for_value(self, key: str, timeout: timedelta) -> KvEntry | None:
        validate_kv_key(key, "KV key", MAX_KV_KEY_BYTES)
        deadline = self.clock.now() + timeout
        while (entry := await self.get(key)) is None:
            left = deadline - self.clock.now()
            if left <= timedelta(0):
                return None
            put = self._puts.waiter()
            if await wait_or_timeout(self.clock, put, left) and put.result().key == key:
                # The put itself is the answer, even if a delete has followed it since.
                return put.result()
        return entry

    def _store(self, key: str, value: bytes, *, deleted: bool) -> KvEntry:
        self._revision += 1
        entry = KvEntry(key=key, value=value, revision=self._revision, created=self.clock.now())
        self._latest[key] = _Record(entry, deleted)
        return entry

    def _expired(self, entry: KvEntry) -> bool:
        return self.ttl is not None and entry.created + self.ttl <= self.clock.now()


class MemoryBuckets:
    """The engine's optional buckets; each flag set to False leaves that bucket out."""

    def __init__(
        self,
        clock: Clock,
        *,
        checkpoints: bool = True,
        signals: bool = True,
        workers: bool = True,
    ) -> None:
        self._checkpoints = (
            MemoryKeyValue(clock, bucket=CHECKPOINTS_BUCKET) if checkpoints else None
        )
        self._signals = MemoryKeyValue(clock, bucket=SIGNALS_BUCKET) if signals else None
        self._workers = (
            MemoryKeyValue(clock, bucket=WORKERS_BUCKET, ttl=WORKERS_TTL) if workers else None
        )

    async def checkpoints(self) -> MemoryKeyValue | None:
        return self._checkpoints

    async def signals(self) -> MemoryKeyValue | None:
        return self._signals

    async def workers(self) -> MemoryKeyValue | None:
        return self._workers
