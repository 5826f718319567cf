"""The protocol state machine of the unit suite, run on the NATS adapters: one spec, two backends.

Time here is the real server's, so the rule that advances a manual clock is left out; AckWait
expiry and NAK delays are pinned by the NATS queue tests instead.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from app.embedded import EmbeddedNats
from domain.models import RunId, TaskType
from tests.integration.nats_harness import close_harness, open_harness
from tests.unit.test_protocol_machine import ProtocolMachine

pytestmark = pytest.mark.integration


class NatsProtocolMachine(ProtocolMachine):
    url = ""

    def __init__(self) -> None:
        prefix = uuid.uuid4().hex[:10]
        # Each example has a corner of its own on the shared server: task type and run ids.
        self.task_type = TaskType(f"m{prefix}.work")
        self.run_prefix = f"m{prefix}-r"
        super().__init__()

    def make_bridge(self) -> Any:
        return self.run(open_harness(self.url))

    def teardown(self) -> None:
        self.run(close_harness(self.bridge, self.task_type))
        super().teardown()

    def advance(self, seconds: float) -> None:
        """Not a rule here: the server's clock cannot be moved."""

    def msg_ids(self, run_id: RunId) -> list[str]:
        """JetStream itself drops a repeated msg-id within the window; nothing to count."""
        return []


def test_the_protocol_holds_on_the_nats_backend(nats_server: EmbeddedNats) -> None:
    NatsProtocolMachine.url = nats_server.url

    run_state_machine_as_test(
        NatsProtocolMachine, settings=settings(max_examples=25, stateful_step_count=20)
    )
