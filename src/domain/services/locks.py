"""In-process serialisation by key: resolves per task, polls per poll_id and per worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs


@attrs.define
class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it.

    Mutable on purpose: it is the process's registry of keys being worked on.
    """

    _locks: dict[str, tuple[asyncio.Lock, int]] = attrs.field(factory=dict)

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
