"""Stream chunks: core NATS, not JetStream, on `stream.<run_id>.<step_id>` (PROTOCOL.md 1.5)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from nats.aio.client import Client as NatsClient

from adapters.nats.errors import translated
from adapters.nats.payloads import require_within_max_payload
from adapters.wire import stream_subject
from domain.models import RawJson, RunId, StepId


@attrs.frozen
class NatsStreams:
    """StreamPublisher: at-most-once to whoever subscribes now; nothing is stored."""

    _nc: NatsClient

    async def publish(
        self,
        run_id: RunId,
        step_id: StepId,
        data: RawJson,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        subject = stream_subject(run_id, step_id)
        with translated(f"publish stream chunk on {subject}"):
            require_within_max_payload(self._nc, data, headers)
            await self._nc.publish(subject, data, headers=dict(headers) if headers else None)
