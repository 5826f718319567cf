"""A few operations awaited at once, at about half the CPU of `asyncio.gather`.

A task's dispatch and its resolve each overlap two or three NATS round trips, several times
over. `gather` makes a task of each operation and a future with a callback per task to
collect them. Here the first operation runs in the caller's own task and the others in a
task each, awaited in turn. Like `gather`, every operation is awaited to its end, and if
the caller is cancelled, so are the operations still running, which end before it does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar, overload

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")


@overload
async def outcomes(
    first: Awaitable[A], second: Awaitable[B], /
) -> tuple[A | BaseException, B | BaseException]: ...


@overload
async def outcomes(
    first: Awaitable[A], second: Awaitable[B], third: Awaitable[C], /
) -> tuple[A | BaseException, B | BaseException, C | BaseException]: ...


@overload
async def outcomes(*awaitables: Awaitable[A]) -> tuple[A | BaseException, ...]: ...


async def outcomes(*awaitables: Awaitable[Any]) -> tuple[Any, ...]:
    """Each operation's result, or the exception it raised, in the order given: as
    `gather(..., return_exceptions=True)` answers. An operation cancelled on its own is an
    outcome too; a cancellation of the caller is raised, even one an operation swallowed."""
    if not awaitables:
        return ()
    caller = asyncio.current_task()
    cancels = 0 if caller is None else caller.cancelling()
    first, *others = awaitables
    started = [asyncio.ensure_future(other) for other in others]
    found: list[Any] = []
    try:
        for operation in (first, *started):
            try:
                found.append(await operation)
            except (Exception, asyncio.CancelledError) as exc:  # handed over, as gather does
                found.append(exc)
            if caller is not None and caller.cancelling() > cancels:
                raise asyncio.CancelledError
    except BaseException:
        for task in started:
            task.cancel()
        if started:
            await asyncio.wait(started)
        raise
    return tuple(found)


@overload
async def results(first: Awaitable[A], second: Awaitable[B], /) -> tuple[A, B]: ...


@overload
async def results(
    first: Awaitable[A], second: Awaitable[B], third: Awaitable[C], /
) -> tuple[A, B, C]: ...


async def results(*awaitables: Awaitable[Any]) -> tuple[Any, ...]:
    """Each operation's result; once all have ended, the exception of the first one (in the
    order given) that failed."""
    found = await outcomes(*awaitables)
    for outcome in found:
        if isinstance(outcome, BaseException):
            raise outcome
    return found
