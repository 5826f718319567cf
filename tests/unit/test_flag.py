"""The one-shot flag that the drain and a poll's departed client are waited on through."""

from __future__ import annotations

import asyncio

import pytest

from domain.services.flag import Flag


async def test_every_waiter_returns_once_the_flag_is_set() -> None:
    flag = Flag()
    waiters = [asyncio.ensure_future(flag.wait()) for _ in range(3)]
    watched = flag.future()
    await asyncio.sleep(0)  # let the waiters reach their await

    flag.set()

    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    assert watched.done()
    assert flag.is_set()


async def test_a_waiter_cancelled_leaves_the_others_waiting_on_the_shared_future() -> None:
    flag = Flag()
    leaving, staying = asyncio.ensure_future(flag.wait()), asyncio.ensure_future(flag.wait())
    await asyncio.sleep(0)

    leaving.cancel()
    await asyncio.gather(leaving, return_exceptions=True)
    flag.set()

    await asyncio.wait_for(staying, 1)
    assert leaving.cancelled()
    assert not flag.future().cancelled()


async def test_a_flag_set_before_anyone_waits_is_done_at_once() -> None:
    flag = Flag()
    flag.set()

    assert flag.future().done()
    await asyncio.wait_for(flag.wait(), 1)


async def test_a_cancelled_future_is_made_again_instead_of_waking_every_waiter() -> None:
    flag = Flag()
    flag.future().cancel()

    fresh = flag.future()
    done_before_set = fresh.done()
    flag.set()

    assert not done_before_set
    assert fresh.done()
    assert not fresh.cancelled()
    await asyncio.wait_for(flag.wait(), 1)


def test_a_flag_moves_to_a_new_event_loop_once_the_old_one_is_closed() -> None:
    flag = Flag()
    asyncio.run(_not_yet(flag))

    asyncio.run(_set_soon_and_wait(flag))


def test_a_flag_refuses_a_second_loop_while_the_first_may_still_wait_on_it() -> None:
    flag = Flag()
    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(_not_yet(flag))

        with pytest.raises(RuntimeError, match="another running event loop"):
            asyncio.run(_not_yet(flag))
    finally:
        first.close()


async def _not_yet(flag: Flag) -> None:
    assert not flag.future().done()


async def _set_soon_and_wait(flag: Flag) -> None:
    asyncio.get_running_loop().call_later(0.01, flag.set)
    await asyncio.wait_for(flag.wait(), 1)
