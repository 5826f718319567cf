"""Stream chunks (core NATS `stream.<run>.<step>`) kept in memory for the simulator to read."""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Final

import attrs

from domain.models import RawJson, RunId, StepId

DEFAULT_RETAINED: Final = 1000


@attrs.define
class MemoryStreams:
    """StreamPublisher that keeps the last `retained` chunks of each step.

    Core NATS keeps nothing; retaining a window lets a late reader see what it missed.
    Mutable on purpose: it holds the chunks.
    """

    retained: int = DEFAULT_RETAINED
    _chunks: defaultdict[tuple[RunId, StepId], deque[RawJson]] = attrs.field(init=False)

    @_chunks.default
    def _empty(self) -> defaultdict[tuple[RunId, StepId], deque[RawJson]]:
        return defaultdict(lambda: deque(maxlen=self.retained))

    async def publish(self, run_id: RunId, step_id: StepId, data: RawJson) -> None:
        self._chunks[run_id, step_id].append(data)

    def chunks(self, run_id: RunId, step_id: StepId) -> list[RawJson]:
        """The step's retained chunks, oldest first."""
        return list(self._chunks.get((run_id, step_id), ()))
