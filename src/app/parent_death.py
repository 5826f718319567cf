"""A signal for a child process when its parent dies, set between fork and exec: Linux's
PR_SET_PDEATHSIG; elsewhere nothing, and an orphan runs on until it is stopped."""

from __future__ import annotations

import ctypes
import signal
import sys
from typing import Final

_PR_SET_PDEATHSIG: Final = 1


def signal_when_parent_dies(signum: signal.Signals) -> None:
    """Run in the child before exec; the setting survives the exec."""
    if sys.platform.startswith("linux"):
        # The process's own symbols, libc's among them: no search for the library, which
        # would run ldconfig here, between fork and exec.
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)
