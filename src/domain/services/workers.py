"""Worker registry: connect sessions, counted per worker id (Decision 10)."""

from __future__ import annotations

import logging
from collections import Counter

import attrs

from domain.errors import BackendError, BucketUnavailableError
from domain.models import TaskType, WorkerId, WorkerRegistration
from domain.ports import Clock, Telemetry, WorkerDirectory
from domain.services.release import ReleaseLeases
from domain.telemetry import NO_TELEMETRY

log = logging.getLogger(__name__)

LANGUAGE = "http"
TRANSPORT = "bridge"


@attrs.frozen(kw_only=True)
class ConnectCommand:
    worker_id: WorkerId
    task_types: list[TaskType]
    max_tasks: int
    metadata: dict[str, str] | None = None


@attrs.define
class WorkerRegistry:
    """Registers a worker while it has at least one open connect session.

    Mutable on purpose: it counts this process's open sessions per worker id, so the
    registration is deleted only when the last of them closes. Then, with `release`, the
    worker's active leases are given back at once (Decision 12). Sessions are counted per
    process: a worker with streams on two replicas loses its leases when either replica's
    last stream closes, as it loses its registration until the other re-puts it.
    """

    directory: WorkerDirectory
    clock: Clock
    release: ReleaseLeases | None = attrs.field(default=None, kw_only=True)
    telemetry: Telemetry = attrs.field(default=NO_TELEMETRY, kw_only=True)
    _sessions: Counter[WorkerId] = attrs.field(factory=Counter)

    async def open_session(self, cmd: ConnectCommand) -> None:
        """Register the worker; raises if the registration cannot be stored: a fault as
        BackendError `register failed: <cause>`, the Go bridge's text, and NATS out of reach
        as it is (a 503, worth retrying)."""
        try:
            await self.directory.register(self._registration(cmd))
        except (BackendError, BucketUnavailableError) as exc:
            raise BackendError(f"register failed: {exc}") from exc
        self._sessions[cmd.worker_id] += 1
        self.telemetry.workers_connected(len(self._sessions))

    async def refresh(self, cmd: ConnectCommand) -> None:
        """Re-put the registration (new last_seen, TTL restarted); best effort."""
        try:
            await self.directory.register(self._registration(cmd))
        except Exception as exc:
            log.warning("worker %s not refreshed: %s", cmd.worker_id, exc)

    async def close_session(self, worker_id: WorkerId) -> None:
        self._sessions[worker_id] -= 1
        if self._sessions[worker_id] > 0:
            return
        del self._sessions[worker_id]
        self.telemetry.workers_connected(len(self._sessions))
        try:
            await self.directory.deregister(worker_id)
        except Exception as exc:
            log.warning("worker %s not deregistered: %s", worker_id, exc)
        if self.release is not None:
            await self.release.of_worker(worker_id)

    def sessions(self, worker_id: WorkerId) -> int:
        return self._sessions[worker_id]

    async def registered(self) -> list[WorkerRegistration]:
        return await self.directory.list()

    def _registration(self, cmd: ConnectCommand) -> WorkerRegistration:
        return WorkerRegistration(
            worker_id=cmd.worker_id,
            task_types=cmd.task_types,
            language=LANGUAGE,
            transport=TRANSPORT,
            max_tasks=cmd.max_tasks,
            last_seen=self.clock.now(),
            metadata=cmd.metadata,
        )
