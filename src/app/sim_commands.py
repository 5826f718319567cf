"""The `dagnats-bridge sim` verbs: JSON lines on stdout, one line on stderr when they fail."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import BinaryIO, Final, TextIO

from app import sim_client
from app.sim_client import BridgeError, Item
from app.sim_target import Bridge, NewTask

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


def run_verb(bridge: Bridge, args: argparse.Namespace) -> int:
    """`dagnats-bridge sim <verb>`, parsed: its exit status, its output on stdout."""
    return run(lambda: VERBS[args.verb](bridge, args), sys.stderr)


def _enqueue(bridge: Bridge, args: argparse.Namespace) -> None:
    task = NewTask(
        task_type=args.task_type, raw_input=args.input, run_id=args.run_id, step_id=args.step_id
    )
    enqueue(bridge, sys.stdout.buffer, task)


def _events(bridge: Bridge, args: argparse.Namespace) -> None:
    if args.follow or args.until_done:
        follow(bridge, sys.stdout.buffer, args.run_id, until_done=args.until_done)
    else:
        events(bridge, sys.stdout.buffer, args.run_id)


def _runs(bridge: Bridge, _: argparse.Namespace) -> None:
    runs(bridge, sys.stdout.buffer)


VERBS: Final[dict[str, Callable[[Bridge, argparse.Namespace], None]]] = {
    "enqueue": _enqueue,
    "events": _events,
    "runs": _runs,
}
