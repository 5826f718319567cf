"""Drain: the way out of a process that was told to stop (SIGTERM).

While it drains, the process takes no new polls or connects, answers waiting polls with what
they hold, ends waiting wait_signals (503: wait again on another replica), closes connect
streams with a last `shutdown` event, and still serves resolves, so that requests in flight
can end. A connect stream it closes does not release its worker's
leases: the worker has not gone, and may resolve its tasks here or on another replica. On
the way out, it releases only the leases that nothing else could resolve: those of a store
in this process's memory.
"""

from __future__ import annotations

import asyncio
import logging

import attrs

from domain.models import LeaseState, WorkerId
from domain.ports import LeaseListing
from domain.services.flag import Flag
from domain.services.release import ReleaseLeases

log = logging.getLogger(__name__)


@attrs.define
class Drain:
    """Whether the process is draining. Mutable on purpose: begun once, by the stop signal,
    and read by every poll and connect stream of the process."""

    _begun: Flag = attrs.field(init=False, factory=Flag)

    @property
    def begun(self) -> bool:
        return self._begun.is_set()

    def begin(self) -> None:
        self._begun.set()

    async def wait(self) -> None:
        """Return once the drain has begun."""
        await self._begun.wait()

    def when_begun(self) -> asyncio.Future[None]:
        """Done once the drain has begun: shared by every waiter, to watch, never to cancel."""
        return self._begun.future()


@attrs.frozen(kw_only=True)
class DrainingRelease(ReleaseLeases):
    """ReleaseLeases that knows the drain: a worker's last stream closed by the drain keeps
    its leases, and on the way out the leases only this process could settle are released.

    A worker that really leaves while the process drains keeps its leases too: with a shared
    store they come back after AckWait, as they did before Decision 12."""

    drain: Drain
    local_leases: LeaseListing | None
    """The lease store when nothing outside this process can resolve its leases; None when
    another replica or a restarted bridge can (a shared store)."""

    async def of_worker(self, worker_id: WorkerId) -> int:
        if self.drain.begun:
            return 0  # its stream was closed by the drain, not by the worker leaving
        return await super().of_worker(worker_id)

    async def left_behind(self) -> int:
        """NAK without delay the active leases that only this process could settle; how many.
        Never raises."""
        if self.local_leases is None:
            return 0
        released = 0
        for lease in await self.local_leases.live():
            if lease.state is LeaseState.ACTIVE and await self._release(lease):
                released += 1
        if released:
            log.info("released %d task(s) left unsettled: their leases live only here", released)
        return released
