"""Stream chunks (core NATS `stream.<run>.<step>`) kept in memory for the simulator to read."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping
from typing import Final

import attrs

from adapters.memory.payloads import require_within_max_payload
from adapters.wire import stream_subject
from domain.models import RawJson, RunId, StepId

DEFAULT_RETAINED: Final = 1000


@attrs.frozen
class _Chunk:
    data: RawJson
    headers: dict[str, str]


@attrs.define
class MemoryStreams:
    """StreamPublisher that keeps the last `retained` chunks of each step, with their headers.

    Core NATS keeps nothing; retaining a window lets a late reader see what it missed.
    Mutable on purpose: it holds the chunks.
    """

    retained: int = DEFAULT_RETAINED
    _chunks: defaultdict[tuple[RunId, StepId], deque[_Chunk]] = attrs.field(init=False)

    @_chunks.default
    def _empty(self) -> defaultdict[tuple[RunId, StepId], deque[_Chunk]]:
        return defaultdict(lambda: deque(maxlen=self.retained))

    async def publish(
        self,
        run_id: RunId,
        step_id: StepId,
        data: RawJson,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        subject = stream_subject(run_id, step_id)
        require_within_max_payload(f"publish stream chunk on {subject}", data, headers)
        self._chunks[run_id, step_id].append(_Chunk(data, dict(headers or {})))

    def chunks(self, run_id: RunId, step_id: StepId) -> list[RawJson]:
        """The step's retained chunks, oldest first."""
        return [chunk.data for chunk in self._chunks.get((run_id, step_id), ())]

    def chunk_headers(self, run_id: RunId, step_id: StepId) -> list[dict[str, str]]:
        """The headers of the step's retained chunks, oldest first."""
        return [chunk.headers for chunk in self._chunks.get((run_id, step_id), ())]
