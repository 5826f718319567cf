"""The bridge under test, installed as a deployment installs it: in a venv of its own, with
its runtime dependencies only, editable so that it runs this checkout's code.

Not from the venv the benchmark runs in: that one holds the bench extra, and nats-py imports
aiohttp whenever it is installed, 11 MiB more in every bridge process than a deployment pays.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

from bench.procs import ROOT

BRIDGE_VENV: Final = ROOT / "bench" / ".bridge-venv"
STAMP: Final = BRIDGE_VENV / "pyproject.sha256"
"""The digest of the pyproject.toml the venv was made from: another one makes it again."""


def installed_bridge() -> Path:
    """The venv's `dagnats-bridge`; the venv is made first if it is missing or stale."""
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    command = BRIDGE_VENV / "bin" / "dagnats-bridge"
    if command.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return command
    shutil.rmtree(BRIDGE_VENV, ignore_errors=True)
    sys.stderr.write(f"installing the bridge under test in {BRIDGE_VENV} (once)\n")
    subprocess.run([sys.executable, "-m", "venv", str(BRIDGE_VENV)], check=True)  # noqa: S603
    pip = [str(BRIDGE_VENV / "bin" / "pip"), "install", "--quiet", "--editable", str(ROOT)]
    subprocess.run(pip, check=True)  # noqa: S603 - our own venv's pip, our own checkout
    STAMP.write_text(wanted)
    return command
