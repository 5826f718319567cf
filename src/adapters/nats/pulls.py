"""Pull requests on one task type's consumer, and the prefetch buffer their messages land in.

Every pulled message goes into the buffer first, whichever request brought it; `pull` hands
messages out of it. Two inboxes, each one subscription for the life of the puller:

* fetch inbox: no-wait requests for exactly the number still wanted, one at a time, expiring
  after `FETCH_EXPIRES_S`; none when the newest buffered message came with nothing pending
  behind it. JetStream answers at once with what is deliverable (the request
  ends when its batch is full or with a 404/408 status), so `pull` returns at once and never
  asks for more than it may hand out. The expiry matters when the consumer is at its
  MaxAckPending: JetStream then leaves a no-wait request without one unanswered, for good.
* wait inbox: at most one waiting request of one message at a time, expiring after at most
  `LONG_PULL_S`. JetStream answers it the moment a message becomes deliverable (a publish, a
  NAK delay or an AckWait ending), which is what wakes `wait_ready`. One that expires with
  nothing is renewed by the puller, to expire with the last of the waiters, without waking
  them; one whose end never comes (lost with the connection) wakes them at its deadline, if
  the reconnection has not woken them first (`reconnected`). One that a 409 Leadership Change
  or Server Shutdown ends (the consumer's leader moved, or its server stops) wakes them after
  a pause, to send another (`CONFLICT_PAUSE_S`). None is sent while the connection is away.

A waiting request cannot be cancelled, and one nobody waits on any more may still bring a
message. The subscriptions outlive every request, so such a message is never lost: it waits
in the buffer for the next `pull`, and if none comes within `PREFETCH_HOLD_S` (at most half
the AckWait), it is NAKed without delay so that any other consumer client can have it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Final

import attrs
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from adapters.nats.acks import settle
from adapters.nats.errors import translated
from adapters.nats.inbox import Inbox
from adapters.nats.jsapi import (
    CONFLICT,
    DESCRIPTION_HEADER,
    HEARTBEAT,
    NAK,
    NO_MESSAGES,
    NO_RESPONDERS,
    PASSING_CONFLICTS,
    REQUEST_TIMEOUT,
    SERVER_SHUTDOWN,
    STATUS_HEADER,
    nanoseconds,
    pull_subject,
)
from domain.errors import BackendError, BackendUnavailableError, DomainError

log = logging.getLogger(__name__)

LONG_PULL_S: Final = 2.0
"""Longest life of a waiting request, so an abandoned one brings a message for ≤ 2 s more."""
MIN_EXPIRES_S: Final = 0.05
FETCH_EXPIRES_S: Final = 0.005
"""Expiry of a no-wait request: with nothing deliverable, its 408 comes after this long. A
server too busy to answer within it only sends the caller on to `wait_ready`, whose waiting
request then brings the message."""
PREFETCH_HOLD_S: Final = 2.0
"""How long a pulled message may wait in the buffer before it is NAKed."""
REPLY_TIMEOUT_S: Final = 5.0
"""How long a no-wait request may go unanswered before NATS counts as unavailable."""
EXPIRY_GRACE_S: Final = 1.0
"""How long past its expiry a waiting request counts as live when its 408 never came."""
NORMAL_ENDS: Final = frozenset({NO_MESSAGES, REQUEST_TIMEOUT})
CONFLICT_PAUSE_S: Final = 0.05
"""How long the waiters pause before they send again after a waiting request ended by a 409
Leadership Change; doubled for each such end in a row, up to CONFLICT_PAUSE_MAX_S. Sent at
once, the next request met the old leader again (70 ms after a node's shutdown began, on a
cluster), and a server answering every request so would have the puller renew in a loop as
fast as the replies came."""
CONFLICT_PAUSE_MAX_S: Final = 1.0
"""Also the pause after a 409 Server Shutdown: a request sent sooner reached the stopping
server once its JetStream was gone (a 503), and its connection's end soon follows, after
which the reconnection wakes the waiters (`reconnected`)."""


@attrs.define
class _Pull:
    """One pull request. Mutable on purpose: its replies arrive one by one."""

    token: str
    batch: int
    deadline: float
    """Loop time after which it counts as over even if its end never arrived (lost connection)."""
    reconnects: int
    """The connection's reconnections when it was sent: a reconnection since may have lost it."""
    received: int = 0
    fault: str | None = None
    ended: asyncio.Event = attrs.field(factory=asyncio.Event)

    def active(self, now: float, reconnects: int) -> bool:
        return not self.ended.is_set() and now < self.deadline and reconnects == self.reconnects

    def end(self, fault: str | None = None) -> None:
        self.fault = fault
        self.ended.set()


@attrs.frozen
class _Held:
    msg: Msg
    release: asyncio.TimerHandle


@attrs.define
class TypePuller:
    """Pulls of one consumer (`consumer` on `stream`) for one bridge process.

    Mutable on purpose: it owns the subscriptions, the requests in flight and the buffer.
    `on_arrival` is called whenever a message is buffered, a waiting request ends in a fault
    or is lost, its renewal for the waiters (`waited_on`) fails, the pause after a passing
    conflict ends, or the connection reconnected.
    """

    nc: NatsClient
    stream: str
    consumer: str
    ack_wait: timedelta
    on_arrival: Callable[[], None]
    settlements: Inbox = attrs.field(kw_only=True)
    """Where JetStream answers the NAKs of messages released on `close`."""
    _inbox: str = attrs.field(init=False, default="")
    _subs: list[Subscription] = attrs.field(init=False, factory=list)
    _tokens: itertools.count[int] = attrs.field(init=False, factory=itertools.count)
    _held: deque[_Held] = attrs.field(init=False, factory=deque)
    _fetching: _Pull | None = attrs.field(init=False, default=None)
    _waiting: _Pull | None = attrs.field(init=False, default=None)
    _fetch_lock: asyncio.Lock = attrs.field(init=False, factory=asyncio.Lock)
    _releases: set[asyncio.Task[None]] = attrs.field(init=False, factory=set)
    _faulted: bool = attrs.field(init=False, default=False)
    _passing_conflicts: int = attrs.field(init=False, default=0)
    """Requests ended by a passing conflict since the last message, or the last request
    ended by a 404 or 408."""
    _pause: asyncio.TimerHandle | None = attrs.field(init=False, default=None)
    """Wakes the waiters at the end of the pause after a passing conflict."""
    _server_stopping: bool = attrs.field(init=False, default=False)
    """The last passing conflict was a 409 Server Shutdown."""
    _waiters: Counter[float] = attrs.field(init=False, factory=Counter)
    """The loop times until which the waiters wait, each with how many wait until then."""

    async def start(self) -> None:
        """Subscribe the two inboxes; call once before anything else."""
        self._inbox = self.nc.new_inbox()
        with translated(f"subscribe the pull inboxes of {self.consumer}"):
            self._subs = [
                await self.nc.subscribe(f"{self._inbox}.f.*", cb=self._on_fetch_reply),
                await self.nc.subscribe(f"{self._inbox}.w.*", cb=self._on_wait_reply),
            ]

    @property
    def holding(self) -> bool:
        return bool(self._held)

    @property
    def faulted(self) -> bool:
        """JetStream answered a pull with a fault (a 503 when the consumer is gone)."""
        return self._faulted

    async def pull(self, max_messages: int) -> list[Msg]:
        """Up to `max_messages`: those buffered first, then what JetStream has right now.

        Messages leave the buffer only on return, so a cancelled call loses none.
        """
        async with self._fetch_lock:
            wanted = max_messages - len(self._held)
            if wanted > 0 and not self._none_pending() and not self._waiting_for_one():
                await self._pull_now(wanted)
            return self._take(max_messages)

    async def keep_waiting(self, seconds: float) -> None:
        """Have a waiting request of one message outstanding, expiring within `seconds`.

        Reuses the one in flight. Raises BackendError when the last one ended in a fault.
        """
        loop = asyncio.get_running_loop()
        last = self._waiting
        if last is not None and last.fault is not None:
            self._waiting = None
            raise _fault(f"wait for {self.consumer} tasks", last.fault)
        if last is not None and self._live(last):
            return
        if self.nc.is_reconnecting:
            # Queued until the reconnection, it would pass for one lost then, and another
            # would follow it; the reconnection wakes the waiters (`reconnected`).
            return
        expires = min(max(seconds, MIN_EXPIRES_S), LONG_PULL_S)
        pull = self._waiting = self._new_pull("w", 1, loop.time() + expires + EXPIRY_GRACE_S)
        try:
            await self._request(pull, {"batch": 1, "expires": nanoseconds(expires)})
        except BaseException:
            if self._waiting is pull:
                self._waiting = None  # never sent: it must not pass for one in flight
            raise
        loop.call_at(pull.deadline, self._if_lost, pull)

    @contextlib.contextmanager
    def waited_on(self, until: float) -> Iterator[None]:
        """Count a waiter, waiting until the loop time `until`, for as long as the block
        runs: a waiting request that expires with nothing meanwhile is renewed here, to
        expire with the last of the waiters, and the waiters sleep on."""
        self._waiters[until] += 1
        try:
            yield
        finally:
            self._waiters[until] -= 1
            if not self._waiters[until]:
                del self._waiters[until]

    def reconnected(self) -> None:
        """After a reconnection, the requests sent before it count as lost with the old
        connection (a restarted server has lost them): a fetch ends with what came, where it
        waited for its reply timeout and failed, and the waiters wake to send another waiting
        request, where they slept until its deadline. A reply that comes all the same (a
        request that a consumer leader on another node of a cluster still held) is buffered
        as any is; the cost is one waiting request more, which may prefetch one message."""
        reconnects = self.nc.stats["reconnects"]
        for pull in (self._fetching, self._waiting):
            if pull is not None and pull.reconnects != reconnects and not pull.ended.is_set():
                pull.end()
        self.on_arrival()

    async def close(self) -> None:
        """Stop pulling and NAK what was pulled but not handed out."""
        if self._pause is not None:
            self._pause.cancel()
        if not self.nc.is_closed:
            for sub in self._subs:
                # Draining hands over the messages already on their way, so they are NAKed too.
                with contextlib.suppress(nats.errors.Error):
                    await sub.drain()  # type: ignore[no-untyped-call]  # nats-py leaves it bare
        for held in self._held:
            held.release.cancel()
            self._release_later(held.msg)
        self._held.clear()
        await asyncio.gather(*self._releases)

    async def _pull_now(self, batch: int) -> None:
        pull = self._new_pull("f", batch, asyncio.get_running_loop().time() + REPLY_TIMEOUT_S)
        self._fetching = pull
        body = {"batch": batch, "no_wait": True, "expires": nanoseconds(FETCH_EXPIRES_S)}
        await self._request(pull, body)
        try:
            async with asyncio.timeout_at(pull.deadline):
                await pull.ended.wait()
        except TimeoutError:
            raise BackendUnavailableError(
                f"fetch {self.consumer} tasks: no reply from JetStream in {REPLY_TIMEOUT_S} s"
            ) from None
        finally:
            self._fetching = None
        if pull.fault is not None:
            raise _fault(f"fetch {self.consumer} tasks", pull.fault)

    def _new_pull(self, kind: str, batch: int, deadline: float) -> _Pull:
        return _Pull(
            token=f"{kind}.{next(self._tokens)}",
            batch=batch,
            deadline=deadline,
            reconnects=self.nc.stats["reconnects"],
        )

    async def _request(self, pull: _Pull, body: Mapping[str, object]) -> None:
        with translated(f"pull {self.consumer} tasks"):
            await self.nc.publish(
                pull_subject(self.stream, self.consumer),
                json.dumps(body).encode(),
                reply=f"{self._inbox}.{pull.token}",
            )

    async def _on_fetch_reply(self, msg: Msg) -> None:
        self._route(msg, self._fetching)

    async def _on_wait_reply(self, msg: Msg) -> None:
        """A message is buffered, which wakes the waiters (`_hold`). A waiting request that
        expired with nothing is renewed, to expire with the last of the waiters, and nobody
        wakes (with 1,000 polls waiting on a type, waking them all every 2 s to renew it cost
        each process about 3 % of a core); with nobody left waiting it is not. A fault, or a
        renewal that cannot be sent, wakes the waiters, who meet it themselves. One ended by a
        passing conflict wakes them after a pause (CONFLICT_PAUSE_S), to send another."""
        expired = self._waiting
        live = expired is not None and not expired.ended.is_set()
        self._route(msg, expired)
        if _status(msg) is None or expired is None or not live or not expired.ended.is_set():
            return  # a message (it woke the waiters), or the end of another request
        if expired.fault is not None:
            self.on_arrival()
            return
        if self._passing_conflicts:
            self._wake_after_a_pause()
            return
        left = max(self._waiters, default=0.0) - asyncio.get_running_loop().time()
        if left < MIN_EXPIRES_S:
            return
        try:
            await self.keep_waiting(left)
        except DomainError:
            self.on_arrival()  # the waiters try it themselves, and meet the fault

    def _wake_after_a_pause(self) -> None:
        pause = CONFLICT_PAUSE_S * 2 ** (self._passing_conflicts - 1)
        if self._server_stopping:
            pause = CONFLICT_PAUSE_MAX_S
        if self._pause is not None:
            self._pause.cancel()
        self._pause = asyncio.get_running_loop().call_later(
            min(pause, CONFLICT_PAUSE_MAX_S), self.on_arrival
        )

    def _if_lost(self, pull: _Pull) -> None:
        """At its deadline, a waiting request whose end never came was lost (with the
        connection, or the server that held it): the waiters wake and send another."""
        if self._waiting is pull and not pull.ended.is_set():
            pull.end()
            self.on_arrival()

    def _route(self, msg: Msg, pull: _Pull | None) -> None:
        """Buffer a message (counting it against `pull`), or let a status end `pull`."""
        if _status(msg) is None:
            self._passing_conflicts = 0
            self._hold(msg)
            if pull is not None:
                pull.received += 1
                if pull.received >= pull.batch:
                    pull.end()
        elif pull is not None:
            self._end_by_status(pull, msg)

    def _end_by_status(self, pull: _Pull, msg: Msg) -> None:
        """End `pull` if the status answers it (not an older request, and not one already
        ended: a server shutting down may end a request twice) and is not a heartbeat."""
        status = _status(msg)
        if status == HEARTBEAT or pull.ended.is_set() or not msg.subject.endswith(f".{pull.token}"):
            return
        if status in NORMAL_ENDS:
            self._passing_conflicts = 0
            pull.end()
            return
        # nats-py leaves the rest of a 503's header block in its description: keep line one.
        description = (msg.headers or {}).get(DESCRIPTION_HEADER, "").split("\n", 1)[0]
        if status == CONFLICT and description in PASSING_CONFLICTS:
            # The consumer is fine: the next request finds its leader, and the puller keeps
            # its buffer.
            self._passing_conflicts += 1
            self._server_stopping = description == SERVER_SHUTDOWN
            log.info("a pull on %s ended with %s %s", self.consumer, status, description)
            pull.end()
            return
        self._faulted = True
        pull.end(fault=f"{status} {description}".strip())

    def _hold(self, msg: Msg) -> None:
        hold = min(PREFETCH_HOLD_S, self.ack_wait.total_seconds() / 2)
        release = asyncio.get_running_loop().call_later(hold, self._release_unclaimed, msg)
        self._held.append(_Held(msg, release))
        self.on_arrival()

    def _none_pending(self) -> bool:
        """JetStream said, delivering the newest buffered message, that no other was
        pending: a no-wait request now would most likely cost a round trip for nothing (the
        wake-up of a waiting poll). The trade: what became deliverable since that delivery
        (the rest of a burst published a moment later, a NAK delay or an AckWait ending) is
        left to the next poll, which a waiting request serves at once, so a poll woken by the
        first task of a burst answers with that one."""
        return bool(self._held) and self._held[-1].msg.metadata.num_pending == 0

    def _waiting_for_one(self) -> bool:
        """Our waiting request is still unanswered, so JetStream has had nothing to deliver
        to it, nor would it have to a no-wait request queued behind it: that one would only
        end at its expiry (a 408 after FETCH_EXPIRES_S), one at a time under the fetch lock,
        so 1,000 polls arriving together took 7 s to get past their first pull. A message
        that JetStream sends meanwhile lands in the buffer and wakes the waiters."""
        waiting = self._waiting
        return waiting is not None and self._live(waiting)

    def _live(self, pull: _Pull) -> bool:
        return pull.active(asyncio.get_running_loop().time(), self.nc.stats["reconnects"])

    def _take(self, count: int) -> list[Msg]:
        taken = [self._held.popleft() for _ in range(min(count, len(self._held)))]
        for held in taken:
            held.release.cancel()
        return [held.msg for held in taken]

    def _release_unclaimed(self, msg: Msg) -> None:
        """Nobody took the message in time: give it back to JetStream at once."""
        for held in self._held:
            if held.msg is msg:
                self._held.remove(held)
                log.info("released an unclaimed prefetched %s message", self.consumer)
                self._release_later(msg)
                return

    def _release_later(self, msg: Msg) -> None:
        task = asyncio.create_task(self._nak(msg))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _nak(self, msg: Msg) -> None:
        try:
            await settle(self.settlements, msg.reply, NAK, "release a prefetched message")
        except DomainError as exc:
            # It comes back after its AckWait anyway; nothing better can be done here.
            log.warning("could not release a prefetched %s message: %s", self.consumer, exc)


def _fault(what: str, fault: str) -> DomainError:
    if fault.startswith(NO_RESPONDERS):
        return BackendUnavailableError(
            f"{what}: no answer from JetStream ({fault}: the consumer is gone or JetStream is down)"
        )
    return BackendError(f"{what}: {fault}")


def _status(msg: Msg) -> str | None:
    """The status of a JetStream control reply; None for a message of the stream."""
    if msg.data or not msg.headers:
        return None
    return msg.headers.get(STATUS_HEADER)
