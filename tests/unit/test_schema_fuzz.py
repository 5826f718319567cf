"""Schemathesis against the bridge's own OpenAPI document, in process on the memory backend.

Every operation gets bodies generated from its documented schema, valid and invalid: no
answer may be a 5xx, and every answer must have a documented status, content type and
shape. The same checks hold along the documented links (enqueue -> poll -> resolve and
checkpoint, enqueue -> events), so resolves also reach tasks that are in flight. Long waits
are cut short (the schema allows a 60 s poll and an hour's wait_signal).
"""

from __future__ import annotations

from typing import Any, Final

import schemathesis
from hypothesis import settings
from litestar import Litestar
from litestar.types import Receive, Scope, Send
from schemathesis import checks

from app.main import create_app
from tests.factories import memory_container

SHORT_WAIT_MS: Final = 20
WAITING_PATHS: Final = ("/v1/tasks/poll", "/v1/tasks/{task_id}/resolve")


class FreshBridge:
    """The ASGI app under test, which `renew` replaces with a new memory bridge.

    Each scenario along the links starts on a new one: Hypothesis requires that what a
    scenario can do next (which links have something to follow) depends on its own steps
    only, never on what earlier scenarios left in a shared bridge.
    """

    def __init__(self) -> None:
        self._app = self._new()

    def renew(self) -> None:
        self._app = self._new()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)

    @staticmethod
    def _new() -> Litestar:
        return create_app(memory_container(heartbeat_interval_ms=5))


BRIDGE: Final = FreshBridge()
schema = schemathesis.openapi.from_asgi("/schema/openapi.json", BRIDGE)
# Enough heartbeats to check their shape; the stream itself never ends.
schema.config.max_stream_events = 3

SCENARIO_STEPS: Final = 8

CHECKS: Final = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def with_short_waits(case: schemathesis.Case[Any]) -> Any:
    """The case's body with `timeout_ms` cut to a few milliseconds where it makes a wait
    (a poll without one waits 5 s)."""
    body = case.body
    if case.operation.path not in WAITING_PATHS or not isinstance(body, dict):
        return body
    timeout = body.get("timeout_ms")
    if type(timeout) is int and 0 < timeout <= SHORT_WAIT_MS:
        return body
    return {**body, "timeout_ms": SHORT_WAIT_MS}


@schema.parametrize()
def test_every_answer_is_documented_and_none_is_a_server_error(
    case: schemathesis.Case[Any],
) -> None:
    case.body = with_short_waits(case)

    case.call_and_validate(checks=CHECKS)


class Scenarios(schema.as_state_machine()):  # type: ignore[misc]
    def setup(self) -> None:
        BRIDGE.renew()

    def before_call(self, case: schemathesis.Case[Any]) -> None:
        case.body = with_short_waits(case)

    def validate_response(
        self, response: Any, case: schemathesis.Case[Any], *_: Any, **kwargs: Any
    ) -> None:
        case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs or None)


TestScenariosAlongTheLinks = Scenarios.TestCase
TestScenariosAlongTheLinks.settings = settings(settings.default, stateful_step_count=SCENARIO_STEPS)
