"""The `dagnats-bridge sim` verbs: JSON lines on stdout, one line on stderr when they fail."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import BinaryIO, Final, TextIO

from app import sim_client
from app.sim_client import Bridge, BridgeError, Item, NewTask

FOLLOW_INTERVAL_S: Final = 0.5
RUN_ENDED: Final = frozenset({"workflow.completed", "workflow.failed"})
INTERRUPTED: Final = 130


def enqueue(bridge: Bridge, out: BinaryIO, task: NewTask) -> None:
    _write(out, [sim_client.enqueue(bridge, task).strip()])


def events(bridge: Bridge, out: BinaryIO, run_id: str) -> None:
    _write(out, (item.raw for item in sim_client.events(bridge, run_id)))


def follow(
    bridge: Bridge,
    out: BinaryIO,
    run_id: str,
    *,
    until_done: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print the run's events as they come, until interrupted or, `until_done`, until the run
    has ended; the history only grows, so the new events are those past the ones printed."""
    printed = 0
    try:
        while True:
            for item in sim_client.events(bridge, run_id)[printed:]:
                _write(out, [item.raw])
                printed += 1
                if until_done and _ends_the_run(item):
                    return
            sleep(FOLLOW_INTERVAL_S)
    except KeyboardInterrupt:
        return


def _ends_the_run(item: Item) -> bool:
    return isinstance(item.value, dict) and item.value.get("type") in RUN_ENDED


def runs(bridge: Bridge, out: BinaryIO) -> None:
    _write(out, (item.raw for item in sim_client.runs(bridge)))


def _write(out: BinaryIO, lines: Iterable[str]) -> None:
    for line in lines:
        out.write(sim_client.one_line(line).encode() + b"\n")
        out.flush()


def run(verb: Callable[[], None], err: TextIO) -> int:
    """The exit status of a verb: 0, or 1 with one line on `err`, never a stack trace."""
    try:
        verb()
    except BridgeError as exc:
        print(f"dagnats-bridge: {exc}", file=err)
        return 1
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader left (`| head`): point stdout at /dev/null so the exit flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0
