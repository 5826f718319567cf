"""The WORKFLOW_HISTORY stream in memory: events by run, deduplicated on msg-id, with the
histories of the runs that finished longest ago forgotten."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Final

import attrs

from adapters.codec import encode
from adapters.memory.dedup import DuplicateWindow
from adapters.memory.payloads import published_headers, require_within_max_payload
from adapters.memory.waiting import Broadcast, wait_or_timeout
from adapters.wire import HISTORY_STREAM, history_subject
from domain.models import Event, OutboundEvent, RunId
from domain.ports import Clock
from domain.protocol import WORKFLOW_COMPLETED, WORKFLOW_FAILED
from domain.services.runs import FINISHED_RUNS_KEPT, FinishedOrder

HISTORY_DUPLICATE_WINDOW: Final = timedelta(seconds=5)
RUN_ENDS: Final = frozenset({WORKFLOW_COMPLETED, WORKFLOW_FAILED})


@attrs.define
class MemoryEventLog:
    """EventLog whose appends can be read back and awaited (the simulator shows them).

    It keeps the history of every run not finished, and of the `finished_kept` runs that
    finished last (a workflow.completed or workflow.failed their latest event): the older
    ones are forgotten, where WORKFLOW_HISTORY keeps 30 days on disk, so that a simulator
    under a long load stays within its memory.

    Mutable on purpose: it is the stream.
    """

    clock: Clock
    duplicate_window: timedelta = attrs.field(default=HISTORY_DUPLICATE_WINDOW, kw_only=True)
    encode: Callable[[Event], bytes] = attrs.field(default=encode, kw_only=True)
    """The codec's, which the NATS event log sends: what an event weighs."""
    finished_kept: int = attrs.field(default=FINISHED_RUNS_KEPT, kw_only=True)
    _stored: dict[RunId, list[OutboundEvent]] = attrs.field(init=False, factory=dict)
    _finished: FinishedOrder = attrs.field(init=False)
    _appended: Broadcast[None] = attrs.field(init=False, factory=Broadcast)
    _duplicates: DuplicateWindow = attrs.field(init=False)

    @_duplicates.default
    def _duplicate_window(self) -> DuplicateWindow:
        return DuplicateWindow(self.clock, self.duplicate_window)

    @_finished.default
    def _finished_order(self) -> FinishedOrder:
        return FinishedOrder(self.finished_kept)

    async def append(self, outbound: OutboundEvent) -> bool:
        subject = history_subject(outbound.event.run_id)
        weighed = published_headers(outbound.headers, outbound.msg_id, HISTORY_STREAM)
        what = f"publish {outbound.event.type} on {subject}"
        require_within_max_payload(what, self.encode(outbound.event), weighed)
        run_id, ends = outbound.event.run_id, outbound.event.type in RUN_ENDS
        if not self._duplicates.admit(outbound.msg_id):
            # A run enqueued again under its id and ended within the window: its end's msg-id
            # is the first run's, so it is not stored, but the run has ended all the same.
            if ends and run_id in self._stored:
                self._finish(run_id)
            return False
        self._stored.setdefault(run_id, []).append(outbound)
        self._finished.reopen(run_id)
        if ends:
            self._finish(run_id)
        self._appended.notify(None)
        return True

    def _finish(self, run_id: RunId) -> None:
        forgotten = self._finished.finish(run_id)
        if forgotten is not None:
            del self._stored[forgotten]

    async def read(self, run_id: RunId) -> list[Event]:
        return [outbound.event for outbound in self.outbound(run_id)]

    async def contains(self, run_id: RunId, msg_id: str) -> bool:
        return any(outbound.msg_id == msg_id for outbound in self.outbound(run_id))

    def outbound(self, run_id: RunId) -> list[OutboundEvent]:
        """The run's stored events with their msg-ids and headers, in append order."""
        return list(self._stored.get(run_id, ()))

    async def wait_for_events(self, run_id: RunId, count: int, timeout: timedelta) -> list[Event]:
        """The run's events once it has at least `count`, or whatever it has at the timeout."""
        deadline = self.clock.now() + timeout
        while len(events := await self.read(run_id)) < count:
            left = deadline - self.clock.now()
            if left <= timedelta(0):
                break
            await wait_or_timeout(self.clock, self._appended.waiter(), left)
        return events
