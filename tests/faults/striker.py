"""`python -m tests.faults.striker NATS_URLS PID SIGNAL AFTER`: send SIGNAL to PID the instant
the AFTER-th step.completed since it started is stored in WORKFLOW_HISTORY, print that moment
(monotonic) and exit.

A process of its own, so that the signal leaves within a fraction of a millisecond: the test's
event loop, busy with the fleet, could take several, and the resolve that published the event
would be done with its last write by then.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal as signals
import sys
import time

import nats
from nats.aio.msg import Msg

from adapters.wire import HISTORY_SUBJECTS
from domain.protocol import STEP_COMPLETED

READY = "ready"


async def strike(servers: list[str], pid: int, signum: signals.Signals, after: int) -> None:
    struck = asyncio.get_running_loop().create_future()
    seen = 0

    async def on_event(msg: Msg) -> None:
        nonlocal seen
        if struck.done() or json.loads(msg.data).get("type") != STEP_COMPLETED:
            return
        seen += 1
        if seen >= after:
            os.kill(pid, signum)
            struck.set_result(time.monotonic())

    client = await nats.connect(servers=servers, allow_reconnect=False)
    try:
        await client.subscribe(HISTORY_SUBJECTS, cb=on_event)
        await client.flush()
        print(READY, flush=True)
        print(await struck, flush=True)
    finally:
        await client.close()


def main() -> int:
    urls, pid, name, after = sys.argv[1:5]
    asyncio.run(strike(urls.split(","), int(pid), signals.Signals[name], int(after)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
