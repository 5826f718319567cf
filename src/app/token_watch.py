"""The tokens file watched while the bridge serves: checked every second, re-read on SIGHUP.

Apart from app.tokens so that the `--workers` parent, which reads the tokens only to check
them before it starts its workers, loads no asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator
from typing import Final

from app.tokens import TokenSource

log = logging.getLogger("dagnats_bridge")

CHECK_INTERVAL_S: Final = 1.0


@contextlib.asynccontextmanager
async def watching(source: TokenSource) -> AsyncIterator[None]:
    """Check the tokens file every CHECK_INTERVAL_S, and re-read it on SIGHUP (when the app
    runs in the main thread, the only one that can take signals). Without a tokens file a
    SIGHUP is noted and ignored, as a `--workers` worker ignores it, instead of ending the
    process."""
    loop = asyncio.get_running_loop()
    on_sighup = threading.current_thread() is threading.main_thread()
    if on_sighup:
        loop.add_signal_handler(
            signal.SIGHUP, source.reload if source.watches_file else _nothing_to_reload
        )
    checks = (
        asyncio.ensure_future(_check_every(source, CHECK_INTERVAL_S))
        if source.watches_file
        else None
    )
    try:
        yield
    finally:
        if checks is not None:
            checks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checks
        if on_sighup:
            loop.remove_signal_handler(signal.SIGHUP)


def _nothing_to_reload() -> None:
    log.info("SIGHUP ignored: no tokens file to re-read")


async def _check_every(source: TokenSource, seconds: float) -> None:
    while True:
        # A file has no change event to await without a platform-specific watcher.
        await asyncio.sleep(seconds)
        source.check()
