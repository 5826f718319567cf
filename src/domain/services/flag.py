"""A flag set once and waited on by many, each beside something else: the start of the drain,
the departure of a poll's client."""

from __future__ import annotations

import asyncio

import attrs


@attrs.define(eq=False)
class Flag:
    """Set once, then set for good. Mutable on purpose: set by one, read by every waiter.

    Lighter than asyncio.Event to wait on beside something else, which is how a long-poll
    waits: `asyncio.wait` watches the one future the waiters share (`future()`), where an
    Event needs a task around `wait()` for each of them. Like an Event, it serves one event
    loop at a time.
    """

    _set: bool = attrs.field(default=False, init=False)
    _future: asyncio.Future[None] | None = attrs.field(default=None, init=False)

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    def future(self) -> asyncio.Future[None]:
        """Done once the flag is set; shared by every waiter of the running loop, so watch it
        (asyncio.wait) or `wait()`, but do not cancel it: if one does, the next call makes
        another, rather than every waiter finding it done while the flag is not set."""
        loop = asyncio.get_running_loop()
        if self._future is None or self._future.cancelled() or _moves(self._future, loop):
            self._future = loop.create_future()
            if self._set:
                self._future.set_result(None)
        return self._future

    async def wait(self) -> None:
        """Return once the flag is set."""
        # Shielded: cancelling this waiter must not cancel the future the others share.
        await asyncio.shield(self.future())


def _moves(future: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the flag's future is to be made again in `loop`: when it is another loop's
    that is done with it. RuntimeError while that loop may still wait on it, as an Event
    raises."""
    bound = future.get_loop()
    if bound is loop:
        return False
    if not (future.done() or bound.is_closed()):
        raise RuntimeError("a Flag is waited on in another running event loop")
    return True
