"""uvicorn with a drain between the stop signal and the stop (see domain.services.drain)."""

from __future__ import annotations

import logging
import math
import socket
import time
from datetime import timedelta
from types import FrameType
from typing import Final

import uvicorn

from domain.services.drain import Drain

log = logging.getLogger("dagnats_bridge")

LAST_WRITE_S: Final = 1
"""What a response being written when the grace ends gets to finish, before it is cut."""


class DrainingServer(uvicorn.Server):
    """On the first SIGTERM or SIGINT the drain begins and the server keeps listening: resolves
    are served, polls, connects and /readyz answer 503, waiting polls and wait_signals answer
    at once and connect streams end. The grace ends when no request is in flight and at least
    `minimum` has passed (for load balancers to see /readyz fail and stop sending), or after
    `grace`; then uvicorn's shutdown closes the listener and cuts what is left. A second
    SIGTERM ends the grace at once; a second SIGINT forces the exit at once, as uvicorn does.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        drain: Drain,
        grace: timedelta,
        minimum: timedelta = timedelta(0),
        early_stops: list[int] | None = None,
    ) -> None:
        """`early_stops` collects the stop signals that come before uvicorn takes them over
        (the process noting them until then): the first one is acted on once serving."""
        super().__init__(config)
        self._early_stops = early_stops if early_stops is not None else []
        self._drain = drain
        self._grace = grace.total_seconds()
        self._minimum = minimum.total_seconds()
        self._stop_signals = 0
        self._deadline: float | None = None
        self._earliest = 0.0
        """When the drain may end, at the soonest (monotonic); set when it begins."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._stop_signals += 1
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        """False while serving, and while draining until the grace ends."""
        if self._early_stops and not self.should_exit:
            self.handle_exit(self._early_stops[0], None)
        if not await super().on_tick(counter):
            return False
        if self._deadline is None:
            self._begin()
        return self._drained()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.config.timeout_graceful_shutdown = max(LAST_WRITE_S, math.ceil(self._left()))
        await super().shutdown(sockets)

    def _begin(self) -> None:
        now = time.monotonic()
        self._deadline = now + self._grace
        self._earliest = now + self._minimum
        self._drain.begin()
        log.info(
            "draining for up to %g s: %d request(s) in flight; a second signal stops at once",
            self._grace,
            len(self.server_state.tasks),
        )
        if self._minimum:
            log.info("not ready for at least %g s before the stop", self._minimum)

    def _drained(self) -> bool:
        if self._stop_signals > 1:
            self._deadline = time.monotonic()
            log.info("stopping now: a second stop signal came")
            return True
        requests = len(self.server_state.tasks)
        if not requests and time.monotonic() >= self._earliest:
            log.info("drained: no request in flight")
            return True
        if self._left() <= 0:
            log.warning("grace over: %d request(s) still in flight are cut", requests)
            return True
        return False

    def _left(self) -> float:
        if self._deadline is None:
            return self._grace
        return self._deadline - time.monotonic()
