"""The stop signals of a process that serves, noted from early in its start until uvicorn
takes them over; the first is acted on once serving (app.draining).

Noting starts before the web stack is imported, which is most of a start. A `--workers`
worker starts with these signals blocked (app.supervisor), so one that came before is noted
as soon as noting starts instead of killing the worker. Only the standard library here: the
supervisor loads this module too.
"""

from __future__ import annotations

import logging
import signal
from typing import Final

log = logging.getLogger("dagnats_bridge")

SERVING_STOP_SIGNALS: Final = frozenset({signal.SIGTERM, signal.SIGINT})


def noting_stops() -> list[int]:
    """From now on, SIGTERM and SIGINT are noted (and logged) in the list returned."""
    noted: list[int] = []

    def note(signum: int, _: object) -> None:
        log.info("stopped by %s", signal.Signals(signum).name)
        noted.append(signum)

    for signum in SERVING_STOP_SIGNALS:
        signal.signal(signum, note)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SERVING_STOP_SIGNALS)
    return noted
