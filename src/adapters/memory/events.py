"""The WORKFLOW_HISTORY stream in memory: events by run, deduplicated on msg-id."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import attrs

from adapters.memory.dedup import DuplicateWindow
from adapters.memory.waiting import Broadcast, wait_or_timeout
from domain.models import Event, OutboundEvent, RunId
from domain.ports import Clock

HISTORY_DUPLICATE_WINDOW: Final = timedelta(seconds=5)


@attrs.define
class MemoryEventLog:
    """EventLog whose appends can be read back and awaited (the simulator shows them).

    Mutable on purpose: it is the stream.
    """

    clock: Clock
    duplicate_window: timedelta = attrs.field(default=HISTORY_DUPLICATE_WINDOW, kw_only=True)
    _stored: list[OutboundEvent] = attrs.field(init=False, factory=list)
    _appended: Broadcast[None] = attrs.field(init=False, factory=Broadcast)
    _duplicates: DuplicateWindow = attrs.field(init=False)

    @_duplicates.default
    def _duplicate_window(self) -> DuplicateWindow:
        return DuplicateWindow(self.clock, self.duplicate_window)

    async def append(self, outbound: OutboundEvent) -> bool:
        if not self._duplicates.admit(outbound.msg_id):
            return False
        self._stored.append(outbound)
        self._appended.notify(None)
        return True

    async def read(self, run_id: RunId) -> list[Event]:
        return [outbound.event for outbound in self.outbound(run_id)]

    async def contains(self, run_id: RunId, msg_id: str) -> bool:
        return any(outbound.msg_id == msg_id for outbound in self.outbound(run_id))

    def outbound(self, run_id: RunId) -> list[OutboundEvent]:
        """The run's stored events with their msg-ids and headers, in append order."""
        return [outbound for outbound in self._stored if outbound.event.run_id == run_id]

    async def wait_for_events(self, run_id: RunId, count: int, timeout: timedelta) -> list[Event]:
        """The run's events once it has at least `count`, or whatever it has at the timeout."""
        deadline = self.clock.now() + timeout
        while len(events := await self.read(run_id)) < count:
            left = deadline - self.clock.now()
            if left <= timedelta(0):
                break
            await wait_or_timeout(self.clock, self._appended.waiter(), left)
        return events
