"""Clocks: the system's, and a manual one that tests and the simulator move by hand."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta

import attrs

from adapters.memory.waiting import Broadcast

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class SystemClock:
    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0))

    def now(self) -> datetime:
        return datetime.now(UTC)


@attrs.frozen
class _Sleeper:
    target: datetime
    order: int
    wake: asyncio.Future[None]


@attrs.define
class ManualClock:
    """A clock that moves only when `advance` is called.

    Mutable on purpose: its time and its sleepers are the state it exists to hold.
    """

    _now: datetime = attrs.field(default=EPOCH, alias="start")
    _sleepers: list[_Sleeper] = attrs.field(init=False, factory=list)
    _order: itertools.count[int] = attrs.field(init=False, factory=itertools.count)
    _fell_asleep: Broadcast[None] = attrs.field(init=False, factory=Broadcast)

    @_now.validator
    def _check_aware(self, _: attrs.Attribute[datetime], value: datetime) -> None:
        if value.utcoffset() is None:
            raise ValueError("a ManualClock starts at a timezone-aware datetime")

    def now(self) -> datetime:
        return self._now

    @property
    def sleepers(self) -> int:
        """How many tasks are sleeping on this clock."""
        return len(self._sleepers)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        sleeper = _Sleeper(
            target=self._now + timedelta(seconds=seconds),
            order=next(self._order),
            wake=asyncio.get_running_loop().create_future(),
        )
        self._sleepers.append(sleeper)
        self._fell_asleep.notify(None)
        try:
            await sleeper.wake
        finally:
            # A cancelled sleeper is still listed; one woken by advance() is not.
            if sleeper in self._sleepers:
                self._sleepers.remove(sleeper)

    def advance(self, delta: timedelta) -> None:
        """Move time forward and wake, in target order, every sleeper whose time has come."""
        if delta < timedelta(0):
            raise ValueError("a ManualClock only moves forward")
        self._now += delta
        due = sorted(
            (s for s in self._sleepers if s.target <= self._now),
            key=lambda s: (s.target, s.order),
        )
        for sleeper in due:
            self._sleepers.remove(sleeper)
            # A sleeper cancelled since its last step still holds its (cancelled) future.
            if not sleeper.wake.done():
                sleeper.wake.set_result(None)

    async def wait_for_sleepers(self, count: int = 1) -> None:
        """Yield to the loop until `count` tasks sleep on this clock.

        Lets a test or the simulator advance time only once the code under test waits on it.
        """
        while len(self._sleepers) < count:
            await self._fell_asleep.waiter()
