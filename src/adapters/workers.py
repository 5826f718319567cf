"""The worker directory over the `workers` KV bucket of any backend."""

from __future__ import annotations

import logging

import attrs

from adapters.codec import DecodeError, decode, encode
from domain.errors import BucketUnavailableError
from domain.models import KvEntry, WorkerId, WorkerRegistration
from domain.ports import KeyValue, KeyValueBuckets

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class KvWorkerDirectory:
    """Registrations as JSON under the worker id, as native workers write them."""

    buckets: KeyValueBuckets

    async def register(self, registration: WorkerRegistration) -> None:
        bucket = await self._bucket()
        await bucket.put(registration.worker_id, encode(registration))

    async def deregister(self, worker_id: WorkerId) -> None:
        bucket = await self._bucket()
        await bucket.delete(worker_id)

    async def get(self, worker_id: WorkerId) -> WorkerRegistration | None:
        """None also without a `workers` bucket (nobody can connect), and for an entry that
        is not a registration."""
        bucket = await self.buckets.workers()
        entry = await bucket.get(worker_id) if bucket is not None else None
        return None if entry is None else _registration(entry)

    async def list(self) -> list[WorkerRegistration]:
        bucket = await self._bucket()
        registrations = []
        for key in sorted(await bucket.keys()):
            entry = await bucket.get(key)
            registration = None if entry is None else _registration(entry)
            if registration is not None:
                registrations.append(registration)
        return registrations

    async def _bucket(self) -> KeyValue:
        bucket = await self.buckets.workers()
        if bucket is None:
            raise BucketUnavailableError("workers")
        return bucket


def _registration(entry: KvEntry) -> WorkerRegistration | None:
    try:
        return decode(entry.value, WorkerRegistration)
    except DecodeError as exc:
        log.warning("worker entry %s is not a registration: %s", entry.key, exc)
        return None
