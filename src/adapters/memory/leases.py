"""Leases in memory, with compare-and-set on one store-wide revision counter."""

from __future__ import annotations

import attrs

from domain.errors import LeaseRevisionError
from domain.models import Lease, TaskId
from domain.ports import Clock


@attrs.define
class MemoryLeaseStore:
    """LeaseStore for one process. Mutable on purpose: it is the store.

    A lease whose deadline has come reads as absent, and cannot be replaced.
    """

    clock: Clock
    _leases: dict[TaskId, Lease] = attrs.field(init=False, factory=dict)
    _revision: int = attrs.field(init=False, default=0)

    async def get(self, task_id: TaskId) -> Lease | None:
        return self._live(task_id)

    async def put(self, lease: Lease) -> Lease:
        self._forget_expired()
        return self._store(lease)

    async def replace(self, lease: Lease) -> Lease:
        current = self._live(lease.task_id)
        if (
            current is None
            or current.lease_id != lease.lease_id
            or current.revision != lease.revision
        ):
            raise LeaseRevisionError(lease.task_id)
        return self._store(lease)

    async def delete(self, task_id: TaskId, lease_id: str) -> None:
        stored = self._leases.get(task_id)
        if stored is not None and stored.lease_id == lease_id:
            del self._leases[task_id]

    async def count(self) -> int:
        now = self.clock.now()
        return sum(1 for lease in self._leases.values() if lease.deadline > now)

    def _live(self, task_id: TaskId) -> Lease | None:
        lease = self._leases.get(task_id)
        return lease if lease is not None and lease.deadline > self.clock.now() else None

    def _store(self, lease: Lease) -> Lease:
        self._revision += 1
        stored = attrs.evolve(lease, revision=self._revision)
        self._leases[lease.task_id] = stored
        return stored

    def _forget_expired(self) -> None:
        # Settled leases are never deleted, only left to expire, so drop them to stay bounded.
        now = self.clock.now()
        for task_id in [t for t, lease in self._leases.items() if lease.deadline <= now]:
            del self._leases[task_id]
