"""Id sources: random for deployments, sequential for tests that assert ids."""

from __future__ import annotations

import itertools
import uuid

import attrs


class UuidIds:
    def new_id(self) -> str:
        return uuid.uuid4().hex


@attrs.define
class SequentialIds:
    """`id-1`, `id-2`, ...: deterministic, so tests can name the ids they expect.

    Mutable on purpose: it holds the counter.
    """

    prefix: str = "id"
    _counter: itertools.count[int] = attrs.field(init=False, factory=lambda: itertools.count(1))

    def new_id(self) -> str:
        return f"{self.prefix}-{next(self._counter)}"
