"""Operations awaited at once: what `asyncio.gather` answers, for less."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.services.together import outcomes, results

# Per operation: the loop iterations it takes, and whether it then fails.
operations = st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=1, max_size=6)


async def operation(index: int, turns: int, fails: bool, ended: list[int]) -> int:
    for _ in range(turns):
        await asyncio.sleep(0)  # a turn of the loop, as a round trip would take
    ended.append(index)
    if fails:
        raise ValueError(index)
    return index


def shown(outcome: Any) -> Any:
    return (type(outcome), outcome.args) if isinstance(outcome, Exception) else outcome


@given(operations)
def test_outcomes_are_what_gather_answers_with_return_exceptions(
    plan: list[tuple[int, bool]],
) -> None:
    async def both() -> tuple[list[Any], list[Any], list[int], list[int]]:
        ours: list[int] = []
        theirs: list[int] = []
        found = await outcomes(*(operation(i, *step, ours) for i, step in enumerate(plan)))
        gathered = await asyncio.gather(
            *(operation(i, *step, theirs) for i, step in enumerate(plan)), return_exceptions=True
        )
        return list(found), list(gathered), ours, theirs

    found, gathered, ours, theirs = asyncio.run(both())

    assert [shown(o) for o in found] == [shown(o) for o in gathered]
    assert sorted(ours) == sorted(theirs) == list(range(len(plan)))


async def test_the_operations_run_at_once() -> None:
    second_started = asyncio.Event()

    async def first() -> str:
        await second_started.wait()  # never set if the second waited for the first to end
        return "first"

    async def second() -> str:
        second_started.set()
        return "second"

    found = await asyncio.wait_for(results(first(), second()), 1)

    assert found == ("first", "second")


async def test_a_failure_is_raised_once_every_operation_has_ended() -> None:
    ended: list[int] = []

    with pytest.raises(ValueError, match="0"):
        await results(operation(0, 0, True, ended), operation(1, 3, False, ended))

    assert sorted(ended) == [0, 1]


async def test_a_cancelled_caller_cancels_the_operations_and_they_end_before_it() -> None:
    running = asyncio.Event()
    cancelled: list[str] = []

    async def waiting(name: str) -> None:
        try:
            running.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    caller = asyncio.ensure_future(outcomes(waiting("first"), waiting("second"), waiting("third")))
    await running.wait()
    await asyncio.sleep(0)  # one turn more: the other operations' tasks reach their wait
    caller.cancel()

    with pytest.raises(asyncio.CancelledError):
        await caller
    assert sorted(cancelled) == ["first", "second", "third"]


async def test_nothing_to_await_is_no_outcome() -> None:
    assert await outcomes() == ()


async def test_an_operation_cancelled_on_its_own_is_an_outcome_as_with_gather() -> None:
    loop = asyncio.get_running_loop()

    async def cancelled_by_its_library() -> None:
        dropped: asyncio.Future[None] = loop.create_future()
        dropped.cancel()
        await dropped

    async def fine() -> str:
        return "ok"

    found = await outcomes(fine(), cancelled_by_its_library())
    gathered = await asyncio.gather(fine(), cancelled_by_its_library(), return_exceptions=True)

    assert found[0] == gathered[0] == "ok"
    assert isinstance(found[1], asyncio.CancelledError)
    assert isinstance(gathered[1], asyncio.CancelledError)


async def test_a_cancellation_an_operation_swallows_still_cancels_the_caller() -> None:
    running = asyncio.Event()

    async def stubborn() -> str:
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "swallowed"
        return "woken"

    async def quick() -> str:
        return "quick"

    caller = asyncio.ensure_future(outcomes(stubborn(), quick()))
    await running.wait()
    caller.cancel()

    with pytest.raises(asyncio.CancelledError):
        await caller
