"""Leases in memory, with compare-and-set on one store-wide revision counter."""

from __future__ import annotations

import heapq
from datetime import datetime
from typing import Final

import attrs

from domain.errors import LeaseRevisionError
from domain.models import Lease, LeaseState, TaskId, WorkerId
from domain.ports import Clock

EXPIRIES_SLACK: Final = 2
EXPIRIES_MINIMUM: Final = 64
"""The expiry heap is rebuilt once it holds more than SLACK entries a stored lease, plus
MINIMUM: a rebuild, which costs what the store holds, comes after at least as many writes."""


@attrs.define
class MemoryLeaseStore:
    """LeaseStore for one process, and LeaseListing: its leases die with the process, so the
    drain releases those left active on the way out. Mutable on purpose: it is the store.

    A lease whose deadline has come reads as absent, and cannot be replaced. The tasks of
    each worker are indexed, so `held_by` costs what the worker holds, not what the store does.
    """

    clock: Clock
    _leases: dict[TaskId, Lease] = attrs.field(init=False, factory=dict)
    _by_worker: dict[WorkerId, set[TaskId]] = attrs.field(init=False, factory=dict)
    _revision: int = attrs.field(init=False, default=0)
    _expiries: list[tuple[datetime, int, TaskId]] = attrs.field(init=False, factory=list)
    """A heap of (deadline, revision, task) for every lease stored: the leases whose deadline
    has come are forgotten from its top, an entry whose revision is no longer the stored one
    passed over. Rebuilt from the stored leases when such entries make up most of it, so it
    stays within a few times the store whatever the writes (extensions, deletes)."""

    async def get(self, task_id: TaskId) -> Lease | None:
        return self._live(task_id)

    def recent(self, task_id: TaskId) -> Lease | None:
        """The store is this process's: what it knows is always the current lease."""
        return self._live(task_id)

    async def put(self, lease: Lease) -> Lease:
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
            self._remove(task_id)

    async def count(self) -> int:
        return len(self._unexpired())

    async def live(self) -> list[Lease]:
        return self._unexpired()

    async def held_by(self, worker_id: WorkerId) -> list[Lease]:
        leases = (self._live(task_id) for task_id in self._by_worker.get(worker_id, ()))
        return [
            lease for lease in leases if lease is not None and lease.state is not LeaseState.SETTLED
        ]

    def _unexpired(self) -> list[Lease]:
        now = self.clock.now()
        return [lease for lease in self._leases.values() if lease.deadline > now]

    def _live(self, task_id: TaskId) -> Lease | None:
        lease = self._leases.get(task_id)
        return lease if lease is not None and lease.deadline > self.clock.now() else None

    def _store(self, lease: Lease) -> Lease:
        self._forget_expired()
        self._remove(lease.task_id)
        self._revision += 1
        stored = attrs.evolve(lease, revision=self._revision)
        self._leases[lease.task_id] = stored
        heapq.heappush(self._expiries, (stored.deadline, stored.revision, stored.task_id))
        if len(self._expiries) > EXPIRIES_SLACK * len(self._leases) + EXPIRIES_MINIMUM:
            self._rebuild_expiries()
        if stored.worker_id is not None:
            self._by_worker.setdefault(stored.worker_id, set()).add(stored.task_id)
        return stored

    def _remove(self, task_id: TaskId) -> None:
        removed = self._leases.pop(task_id, None)
        if removed is None or removed.worker_id is None:
            return
        tasks = self._by_worker[removed.worker_id]
        tasks.discard(task_id)
        if not tasks:
            del self._by_worker[removed.worker_id]

    def _rebuild_expiries(self) -> None:
        self._expiries = [(lease.deadline, lease.revision, t) for t, lease in self._leases.items()]
        heapq.heapify(self._expiries)

    def _forget_expired(self) -> None:
        """Settled leases are never deleted, only left to expire, so drop them to stay bounded
        (on every write, so that the heap's stale entries go too): what has expired, not the
        whole store, which holds every task settled within a lease's time (a scan of it on
        every put made a busy simulator slower by the task)."""
        now = self.clock.now()
        while self._expiries and self._expiries[0][0] <= now:
            _, revision, task_id = heapq.heappop(self._expiries)
            stored = self._leases.get(task_id)
            if stored is not None and stored.revision == revision:
                self._remove(task_id)
