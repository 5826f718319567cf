"""The bridge under test, installed as a deployment installs it: in a venv of its own, with
its runtime dependencies only, editable so that it runs this checkout's code.

Not from the venv the benchmark runs in: that one holds the bench extra, and nats-py imports
aiohttp whenever it is installed, 11 MiB more in every bridge process than a deployment pays.
The packages both venvs have are pinned to the benchmark venv's versions, so that the bridge
and the direct worker run the same nats-py.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path
from typing import Final

from bench.procs import ROOT

BRIDGE_VENV: Final = ROOT / "bench" / ".bridge-venv"
STAMP: Final = BRIDGE_VENV / "made-from.sha256"
"""The digest of what the venv was made from (see `_recipe`): another one makes it again."""
CONSTRAINTS: Final = BRIDGE_VENV / "constraints.txt"
UNPINNED: Final = frozenset({"dagnats-bridge", "pip", "setuptools", "wheel"})
"""The bridge itself, and the installers, which a venv brings or a build picks for itself."""


def installed_bridge() -> Path:
    """The venv's `dagnats-bridge`; the venv is made first if it is missing or stale."""
    pins = _pins()
    wanted = hashlib.sha256(_recipe(pins).encode()).hexdigest()
    command = BRIDGE_VENV / "bin" / "dagnats-bridge"
    if command.exists() and STAMP.exists() and STAMP.read_text() == wanted:
        return command
    shutil.rmtree(BRIDGE_VENV, ignore_errors=True)
    sys.stderr.write(f"installing the bridge under test in {BRIDGE_VENV} (once)\n")
    subprocess.run([sys.executable, "-m", "venv", str(BRIDGE_VENV)], check=True)  # noqa: S603
    CONSTRAINTS.write_text(pins)
    pip = [str(BRIDGE_VENV / "bin" / "pip"), "install", "--quiet", "-c", str(CONSTRAINTS)]
    subprocess.run([*pip, "--editable", str(ROOT)], check=True)  # noqa: S603 - our own venv's pip
    STAMP.write_text(wanted)
    return command


def _pins() -> str:
    """`name==version` of every package of this venv but UNPINNED."""
    found = {(d.metadata["Name"], d.version) for d in distributions()}
    return "".join(
        f"{name}=={version}\n" for name, version in sorted(found) if name not in UNPINNED
    )


def _recipe(pins: str) -> str:
    """What the venv depends on: the interpreter, pyproject.toml, the pinned versions."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    return f"{sys.version}\n{sys.base_prefix}\n{pyproject}\n{pins}"
