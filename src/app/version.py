"""The bridge's version, from one place: the installed distribution's metadata (pyproject)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "dagnats-bridge"


def package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0.0.0"  # run from a source tree that was never installed
