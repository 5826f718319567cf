"""Waiting for "a change OR a time on the clock", without leaking tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import timedelta
from typing import Any, Generic, TypeVar

import attrs

from domain.ports import Clock

T = TypeVar("T")


@attrs.define
class Broadcast(Generic[T]):
    """Wakes every current waiter with one value.

    Take a waiter with no await between checking the state it waits on and taking it, and
    no change is lost. Mutable on purpose: it holds the waiters.
    """

    _waiters: set[asyncio.Future[T]] = attrs.field(init=False, factory=set)

    def waiter(self) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters.add(future)
        future.add_done_callback(self._waiters.discard)
        return future

    def notify(self, value: T) -> None:
        for future in list(self._waiters):
            if not future.done():
                future.set_result(value)


async def wait_or_timeout(
    clock: Clock,
    waiter: asyncio.Future[Any],
    timeout: timedelta,
    *,
    until: Collection[asyncio.Future[Any]] = (),
) -> bool:
    """Wait for `waiter`, for `timeout` to pass on the clock, or for one of `until` (watched,
    not cancelled: they are the caller's).

    True when the waiter has a result. The waiter and the timer are cancelled and awaited,
    so nothing outlives the call, also when the caller is cancelled.
    """
    sleeper = asyncio.ensure_future(clock.sleep(timeout.total_seconds()))
    try:
        await asyncio.wait({waiter, sleeper, *until}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        sleeper.cancel()
        await asyncio.gather(waiter, sleeper, return_exceptions=True)
    return not waiter.cancelled()
