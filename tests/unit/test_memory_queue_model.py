"""MemoryTaskQueue against a dict model of a JetStream work-queue, step by step."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import datetime, timedelta

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
)

from adapters.memory.clock import ManualClock
from adapters.memory.queue import MemoryTaskQueue, MessageState
from domain.models import DeliveryHandle, RunId, StepId, TaskPayload, TaskType

ACK_WAIT = timedelta(minutes=5)
DUPLICATE_WINDOW = timedelta(minutes=2)
NO_WAIT = timedelta(0)
TYPES = (TaskType("alpha"), TaskType("beta"))
MSG_IDS = ("m1", "m2", "m3", "m4", "m5")
RUN = RunId("run")


def decode(raw: bytes) -> TaskPayload:
    return TaskPayload(run_id=RUN, step_id=StepId(json.loads(raw)["step_id"]))


def encode(task: TaskPayload) -> bytes:
    return json.dumps({"step_id": task.step_id}).encode()


@attrs.define(kw_only=True)
class ModelMessage:
    """What the model expects of one stored message; mutable like the stream it models."""

    step: str
    task_type: TaskType
    due: datetime
    count: int = 0
    nakked: bool = False

    def state(self, now: datetime) -> MessageState:
        if self.due <= now:
            return MessageState.AVAILABLE
        return MessageState.DELAYED if self.nakked else MessageState.PENDING


@attrs.frozen
class Held:
    """A delivery handed out by fetch: what a worker would settle later, perhaps too late."""

    handle: DeliveryHandle
    step: str
    count: int


class QueueAgainstModel(RuleBasedStateMachine):
    held = Bundle("held")

    def __init__(self) -> None:
        super().__init__()
        # Hypothesis has no async rules; each example drives the queue on a loop of its own.
        self.runner = asyncio.Runner()
        self.clock = ManualClock()
        self.queue = MemoryTaskQueue(self.clock, decode, encode=encode, ack_wait=ACK_WAIT)
        self.model: dict[str, ModelMessage] = {}
        self.msg_ids: dict[str, datetime] = {}
        self.settled: set[str] = set()
        self.steps = itertools.count(1)

    def teardown(self) -> None:
        self.runner.close()

    @rule(task_type=st.sampled_from(TYPES), msg_id=st.sampled_from(MSG_IDS))
    def publish(self, task_type: TaskType, msg_id: str) -> None:
        step, now = f"s{next(self.steps)}", self.clock.now()
        task = TaskPayload(run_id=RUN, step_id=StepId(step))

        self.runner.run(self.queue.publish_task(task_type, task, msg_id=msg_id))

        first = self.msg_ids.get(msg_id)
        if first is None or now - first >= DUPLICATE_WINDOW:
            self.msg_ids[msg_id] = now
            self.model[step] = ModelMessage(step=step, task_type=task_type, due=now)

    @rule(target=held, task_type=st.sampled_from(TYPES), max_messages=st.integers(1, 3))
    def fetch(self, task_type: TaskType, max_messages: int) -> MultipleResults[Held]:
        now = self.clock.now()

        deliveries = self.runner.run(self.queue.fetch(task_type, max_messages, NO_WAIT))

        got = [str(d.task.step_id) if d.task else "" for d in deliveries]
        for delivery, step in zip(deliveries, got, strict=True):
            assert step not in self.settled, "an acked or termed message came back"
            message = self.model[step]
            assert message.state(now) is MessageState.AVAILABLE, "delivered within its AckWait"
            assert delivery.delivery_count == message.count + 1, "delivery count skipped"
        ready = [m for m in self.model.values() if m.task_type == task_type and m.due <= now]
        assert got == [m.step for m in ready[:max_messages]]
        for message in ready[:max_messages]:
            message.count += 1
            message.due, message.nakked = now + ACK_WAIT, False
        return multiple(
            *(
                Held(d.handle, step, self.model[step].count)
                for d, step in zip(deliveries, got, strict=True)
            )
        )

    @rule(held=held, remove=st.sampled_from(["ack", "term"]))
    def ack_or_term(self, held: Held, remove: str) -> None:
        settle = self.queue.ack if remove == "ack" else self.queue.term

        self.runner.run(settle(held.handle))

        if self._current(held) is not None:
            del self.model[held.step]
            self.settled.add(held.step)

    @rule(held=held, delay=st.sampled_from([0, 5, 30, 600]))
    def nak(self, held: Held, delay: int) -> None:
        self.runner.run(self.queue.nak(held.handle, timedelta(seconds=delay)))

        if (message := self._current(held)) is not None:
            message.due, message.nakked = self.clock.now() + timedelta(seconds=delay), True

    @rule(held=held)
    def in_progress(self, held: Held) -> None:
        self.runner.run(self.queue.in_progress(held.handle))

        # Once AckWait has passed, the message is handed out again all the same.
        now = self.clock.now()
        if (
            (message := self._current(held)) is not None
            and not message.nakked
            and message.due > now
        ):
            message.due = now + ACK_WAIT

    @rule(seconds=st.sampled_from([1, 5, 30, 119, 120, 299, 300, 301, 600]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    @invariant()
    def stream_agrees_with_the_model(self) -> None:
        now = self.clock.now()
        assert [(m.subject, m.delivery_count, m.state) for m in self.queue.messages()] == [
            (f"task.{m.task_type}.{RUN}", m.count, m.state(now)) for m in self.model.values()
        ]

    def _current(self, held: Held) -> ModelMessage | None:
        """The model message if `held` is its latest delivery: only then does settling act."""
        message = self.model.get(held.step)
        return message if message is not None and message.count == held.count else None


QueueAgainstModel.TestCase.settings = settings(stateful_step_count=40)
TestQueueAgainstModel = QueueAgainstModel.TestCase
