"""Poll answers in memory, each kept for the replay window on the injected clock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import attrs

from domain.models import PolledTask, PollId
from domain.ports import Clock
from domain.protocol import POLL_REPLAY_WINDOW


@attrs.define
class MemoryPollAnswerStore:
    """PollAnswerStore for one process. Mutable on purpose: it is the store.

    An answer reads as absent once `window` has passed since its put, as the NATS bucket's
    TTL makes it (there, measured by the server's clock).
    """

    clock: Clock
    window: timedelta = attrs.field(default=POLL_REPLAY_WINDOW, kw_only=True)
    _answers: dict[PollId, tuple[datetime, tuple[PolledTask, ...]]] = attrs.field(
        init=False, factory=dict
    )

    async def get(self, poll_id: PollId) -> list[PolledTask] | None:
        stored = self._answers.get(poll_id)
        if stored is None or self._expired(stored[0]):
            return None
        return list(stored[1])

    async def put(self, poll_id: PollId, tasks: Sequence[PolledTask]) -> None:
        self._forget_expired()
        self._answers[poll_id] = (self.clock.now(), tuple(tasks))

    def _expired(self, put_at: datetime) -> bool:
        return put_at + self.window <= self.clock.now()

    def _forget_expired(self) -> None:
        for poll_id in [p for p, (put_at, _) in self._answers.items() if self._expired(put_at)]:
            del self._answers[poll_id]
