"""Release: give a worker's deliveries back at once when it goes (Decision 12)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Final

import attrs

from domain.errors import DomainError, LeaseRevisionError
from domain.models import Lease, LeaseState, WorkerId
from domain.ports import LeaseStore, TaskQueue
from domain.services.locks import KeyedLocks

log = logging.getLogger(__name__)

RELEASE: Final = "release"
"""The claim a release holds on a lease while it NAKs (and a redelivery's hand-out while it
replaces the lease); a resolve in that moment gets 409."""


@attrs.frozen(kw_only=True)
class ReleaseLeases:
    """NAK without delay and drop the active leases of a worker that has gone, so another
    worker gets the task now instead of after AckWait.

    A lease is claimed (compare-and-set) before its NAK, so a terminal resolve that got there
    first, on this replica or another, keeps it: settled and settling leases, and leases
    redelivered since they were read, are left alone. Never raises; what could not be released
    comes back after AckWait as before.
    """

    queue: TaskQueue
    leases: LeaseStore
    locks: KeyedLocks
    """The resolve service's locks by task id."""

    async def of_worker(self, worker_id: WorkerId) -> int:
        """Release the worker's active leases; how many were released."""
        try:
            held = await self.leases.held_by(worker_id)
        except DomainError as exc:
            log.warning("leases of worker %s not released: %s", worker_id, exc)
            return 0
        released = 0
        for lease in held:
            if lease.state is LeaseState.ACTIVE and await self._release(lease):
                released += 1
        if released:
            log.info("released %d task(s) of worker %s: it disconnected", released, worker_id)
        return released

    async def _release(self, lease: Lease) -> bool:
        async with self.locks.hold(lease.task_id):
            try:
                claimed = await self.leases.replace(
                    attrs.evolve(lease, state=LeaseState.SETTLING, terminal_action=RELEASE)
                )
            except LeaseRevisionError:
                return False  # resolved or redelivered since it was read: not ours to give back
            except DomainError as exc:
                log.warning("lease of %s not released: %s", lease.task_id, exc)
                return False
            try:
                await self.queue.nak(claimed.handle, timedelta(0))
            except DomainError as exc:
                log.warning("task %s not released, back after AckWait: %s", lease.task_id, exc)
                await self._unclaim(claimed)
                return False
            await self._forget(claimed)
        return True

    async def _unclaim(self, claimed: Lease) -> None:
        """The NAK did not happen: the worker may still resolve the task if it comes back."""
        try:
            await self.leases.replace(
                attrs.evolve(claimed, state=LeaseState.ACTIVE, terminal_action=None)
            )
        except DomainError as exc:
            log.warning("lease of %s left claimed: %s", claimed.task_id, exc)

    async def _forget(self, claimed: Lease) -> None:
        try:
            await self.leases.delete(claimed.task_id, claimed.lease_id)
        except DomainError as exc:
            # The delivery is back in the queue; its next lease replaces this one.
            log.warning("released lease of %s not deleted: %s", claimed.task_id, exc)
