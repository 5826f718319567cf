"""Readiness of the memory backend: it lives in this process, so it is ready when we are."""

from __future__ import annotations


class MemoryProbe:
    async def check(self) -> None:
        return None

    def lost_for_good(self) -> str | None:
        return None
