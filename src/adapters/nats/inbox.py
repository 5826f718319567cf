"""Request-reply through one inbox subscription, at about half the CPU of nats-py's
`Client.request`.

nats-py's request pays, per request, for a NUID and two bytes of `os.urandom` (a system
call) for the reply token, a done-callback closure and `asyncio.wait_for`. An `Inbox` pays
for a counter and its deadline's entry; one timer, while any request waits, times out
those past their deadline. It answers as `Client.request` does: the reply, nats'
NoRespondersError when nobody listens on the subject, nats' TimeoutError after `timeout`
(up to SWEEP_S later). `request_many` is for an API that answers one request with several
replies (a batched direct get), collected up to the last.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any, Final

import attrs
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from adapters.nats.jsapi import NO_RESPONDERS, STATUS_HEADER
from adapters.nats.payloads import require_within_max_payload

SWEEP_S: Final = 0.05
"""How often, while a request waits, the requests past their deadline are timed out. A timer
a request (call_later and cancel, 2 µs) cost more than the rest of its bookkeeping, seven
times a task; the requests' timeouts are seconds, for faults."""


@attrs.define
class Inbox:
    """Mutable on purpose: the requests waiting for their reply. The subscription is made
    on the first request and kept for the connection's life (nats-py renews it on a
    reconnect)."""

    connection: NatsClient
    _prefix: str = attrs.field(init=False)
    _subscribing: asyncio.Task[Subscription] | None = attrs.field(init=False, default=None)
    _waiting: dict[str, asyncio.Future[Msg]] = attrs.field(init=False, factory=dict)
    _streams: dict[str, tuple[list[Msg], Callable[[Msg], bool]]] = attrs.field(
        init=False, factory=dict
    )
    """The requests answered by several replies: those come so far, and what tells the last."""
    _deadlines: dict[str, float] = attrs.field(init=False, factory=dict)
    """The loop's time by which each sent request's reply is due."""
    _sweep: asyncio.TimerHandle | None = attrs.field(init=False, default=None)
    _tokens: itertools.count[int] = attrs.field(init=False, factory=itertools.count)

    def __attrs_post_init__(self) -> None:
        self._prefix = f"{self.connection.new_inbox()}."

    async def request(
        self,
        subject: str,
        payload: bytes,
        *,
        timeout: float,
        headers: dict[str, Any] | None = None,
    ) -> Msg:
        return await self._exchange(subject, payload, timeout, headers, str(next(self._tokens)))

    async def request_many(
        self, subject: str, payload: bytes, *, timeout: float, last: Callable[[Msg], bool]
    ) -> list[Msg]:
        """The replies to one request, in order, up to the first for which `last` is true
        (included); `timeout` is for all of them. NoRespondersError, as `request`."""
        token = str(next(self._tokens))
        replies: list[Msg] = []
        self._streams[token] = (replies, last)
        try:
            await self._exchange(subject, payload, timeout, None, token)
        finally:
            del self._streams[token]
        return replies

    async def _exchange(
        self,
        subject: str,
        payload: bytes,
        timeout: float,
        headers: dict[str, Any] | None,
        token: str,
    ) -> Msg:
        if not self._subscription_made():
            await self._subscribe()
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Msg] = loop.create_future()
        # Waiting before the publish goes out, so that no reply can come unawaited; timed
        # from after it, as nats-py times a request.
        self._waiting[token] = reply
        try:
            require_within_max_payload(self.connection, payload, headers)
            await self.connection.publish(
                subject, payload, reply=self._prefix + token, headers=headers
            )
            self._deadlines[token] = loop.time() + timeout
            if self._sweep is None:
                self._sweep = loop.call_later(SWEEP_S, self._expire_due, loop)
            msg = await reply
        finally:
            self._waiting.pop(token, None)
            self._deadlines.pop(token, None)
            if reply.done() and not reply.cancelled():
                reply.exception()  # a timeout that lost the race to a cancellation: not logged
        if _no_responders(msg):
            raise NoRespondersError
        return msg

    def _subscription_made(self) -> bool:
        """Checked on each request, so that only the first ones await anything for it."""
        made = self._subscribing
        return made is not None and made.done() and not made.cancelled() and not made.exception()

    async def _subscribe(self) -> None:
        """Subscribe once, before the first request goes out: every request waits on the one
        step (shielded, so a cancelled request does not leave it half done), and one that
        failed is tried again by the next request."""
        subscribing = self._subscribing
        if subscribing is None or subscribing.done():
            subscribing = self._subscribing = asyncio.ensure_future(
                self.connection.subscribe(f"{self._prefix}*", cb=self._on_reply)
            )
        await asyncio.shield(subscribing)

    async def _on_reply(self, msg: Msg) -> None:
        token = msg.subject.removeprefix(self._prefix)
        reply = self._waiting.get(token)
        if reply is None or reply.done():
            return
        stream = self._streams.get(token)
        if stream is not None:
            replies, last = stream
            replies.append(msg)
            if not (last(msg) or _no_responders(msg)):
                return
        reply.set_result(msg)

    def _expire_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """Time out the requests past their deadline; look again in SWEEP_S while any waits."""
        now = loop.time()
        for token in [token for token, due in self._deadlines.items() if due <= now]:
            del self._deadlines[token]
            reply = self._waiting.pop(token, None)
            if reply is not None and not reply.done():
                reply.set_exception(NatsTimeoutError())
        self._sweep = loop.call_later(SWEEP_S, self._expire_due, loop) if self._deadlines else None


def _no_responders(msg: Msg) -> bool:
    return msg.headers is not None and msg.headers.get(STATUS_HEADER) == NO_RESPONDERS
