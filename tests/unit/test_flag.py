"""The one-shot flag that the drain and a poll's departed client are waited on through."""

from __future__ import annotations

import asyncio

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


def test_a_flag_serves_each_event_loop_it_is_waited_on_in() -> None:
    flag = Flag()
    asyncio.run(_not_yet(flag))
    flag.set()

    asyncio.run(asyncio.wait_for(flag.wait(), 1))


async def _not_yet(flag: Flag) -> None:
    assert not flag.future().done()
