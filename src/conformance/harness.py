"""What every property works with: the bridge's HTTP API, the task source, unique names."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any, Final

import attrs

from conformance.client import (
    Answer,
    Client,
    UnreachableError,
    quoted,
    raw_elements,
    raw_members,
)
from conformance.spec import STEP_ID, ViolationError, expect, expect_status
from conformance.targets import NewTask, Target

POLL_TIMEOUT_MS: Final = 50
"""Short long-polls: a task that is not there yet is simply polled again later."""
TAKE_WITHIN_S: Final = 10.0


@attrs.frozen(kw_only=True)
class PolledItem:
    """A task of a poll answer: its parsed value and the raw text of each member."""

    value: dict[str, Any]
    raw: dict[str, str]

    @property
    def task_id(self) -> str:
        return str(self.value.get("task_id"))

    @property
    def run_id(self) -> str:
        return str(self.value.get("run_id"))

    @property
    def lease_id(self) -> str:
        return str(self.value.get("lease_id"))

    @property
    def attempt(self) -> int:
        attempt = self.value.get("attempt")
        if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
            raise ViolationError(f"{self.task_id} came with attempt {attempt!r}")
        return attempt


@attrs.define(kw_only=True)
class Harness:
    """The bridge under test. Task types are unique per conformance run (`prefix`), one per
    property, and run ids unique per example (`new_run_id`), so the spec never takes a task
    it did not enqueue for itself, even on a bridge others use at the same time.

    Mutable on purpose: it records the task types it named and the violations seen."""

    client: Client
    target: Target
    prefix: str = attrs.field(factory=lambda: f"conformance-{uuid.uuid4().hex[:10]}")
    _numbers: itertools.count[int] = attrs.field(factory=itertools.count, init=False)
    task_types: set[str] = attrs.field(factory=set, init=False)
    """Every task type handed out, for the target to clean up after the run."""
    violations: list[ViolationError] = attrs.field(factory=list, init=False)
    """Violations seen so far, in order: the first one says the most when Hypothesis
    cannot replay a failure (a bridge whose answers depend on timing)."""

    def task_type(self, purpose: str) -> str:
        task_type = f"{self.prefix}-{purpose}"
        self.task_types.add(task_type)
        return task_type

    def new_run_id(self) -> str:
        return f"{self.prefix}-r{next(self._numbers)}"

    def poll(self, task_type: str, max_tasks: int = 1) -> list[PolledItem]:
        answer = self.client.post_json(
            "/v1/tasks/poll",
            {"task_types": [task_type], "max_tasks": max_tasks, "timeout_ms": POLL_TIMEOUT_MS},
        )
        expect_status(answer, 200, f"polling {task_type}")
        try:
            elements = raw_elements(answer.body.decode())
            items = [PolledItem(value=json.loads(text), raw=raw_members(text)) for text in elements]
        except ValueError:
            raise ViolationError(
                f"a poll answer is not an array of objects: {answer.describe()}"
            ) from None
        expect(len(items) <= max_tasks, f"a poll of max_tasks {max_tasks} got {len(items)} tasks")
        return items

    def resolve(self, task_id: str, body: dict[str, Any]) -> Answer:
        return self.client.post_json(f"/v1/tasks/{quoted(task_id)}/resolve", body)

    def resolve_raw(self, task_id: str, body: bytes) -> Answer:
        return self.client.post(f"/v1/tasks/{quoted(task_id)}/resolve", body)

    def enqueued_by_this_run(self, run_id: str) -> bool:
        return run_id.startswith(f"{self.prefix}-")

    def complete(self, item: PolledItem) -> None:
        """Complete a task the spec no longer follows (of an earlier example, or held when an
        example ends), whatever the answer, so that it never comes back."""
        self.resolve(item.task_id, {"action": "complete", "lease_id": item.lease_id})

    def enqueue_and_take(self, task_type: str, raw_input: bytes | None = None) -> PolledItem:
        """Enqueue a task of a new run and poll until it is handed out."""
        run_id = self.new_run_id()
        self.target.enqueue(NewTask(task_type=task_type, run_id=run_id, raw_input=raw_input))
        deadline = time.monotonic() + TAKE_WITHIN_S
        while time.monotonic() < deadline:
            for item in self.poll(task_type):
                if item.run_id == run_id:
                    expect(
                        item.task_id == f"{run_id}.{STEP_ID}",
                        f"the task of run {run_id} came with task_id {item.task_id!r}",
                    )
                    return item
                self.complete(item)
        raise ViolationError(
            f"the task of run {run_id} was not handed out within {TAKE_WITHIN_S:g} s"
        )

    @contextlib.contextmanager
    def taking(self, task_type: str, raw_input: bytes | None = None) -> Iterator[PolledItem]:
        """`enqueue_and_take`, and the task completed if the example ends before it does (a
        violation, or Hypothesis stopping it at a draw), so no lease waits out AckWait."""
        item = self.enqueue_and_take(task_type, raw_input)
        try:
            yield item
        except BaseException:
            with contextlib.suppress(UnreachableError):
                self.complete(item)
            raise
