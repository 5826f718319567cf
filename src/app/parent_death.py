"""A signal for a child process when its parent dies, set between fork and exec: Linux's
PR_SET_PDEATHSIG; elsewhere, or where libc's prctl cannot be found, nothing, and an orphan
runs on until it is stopped."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Final

_PR_SET_PDEATHSIG: Final = 1


def _prctl() -> Callable[..., int] | None:
    """libc's prctl, found here in the parent (the process's own symbols, libc's among
    them), so that the child between fork and exec only calls it: looking it up there would
    take the loader's lock, and searching for libc runs ldconfig."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_PRCTL: Final = _prctl()


def signal_when_parent_dies(signum: signal.Signals) -> None:
    """Run in the child before exec; the setting survives the exec. If the parent died
    while it was being set, the child ends here, before it execs (a signal would meet the
    parent's handlers, which the child still has)."""
    if _PRCTL is None:
        return
    parent = os.getppid()
    _PRCTL(_PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:
        os._exit(1)
