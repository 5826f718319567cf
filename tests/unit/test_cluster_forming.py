"""Start-up against a cluster still forming: what is retried, for how long, and what is not."""

from __future__ import annotations

import logging
from datetime import timedelta

import nats.js.errors
import pytest

from adapters.nats.errors import translated
from adapters.nats.provision import placing, warn_if_fewer_replicas, while_cluster_forms
from domain.errors import BackendError, BackendUnavailableError


class Step:
    """A start-up step that fails with `failures`, one per call, then succeeds."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)


async def test_an_unavailable_jetstream_is_waited_for() -> None:
    step = Step(BackendUnavailableError("no meta leader yet"))

    await while_cluster_forms(step)

    assert step.calls == 2


async def test_a_fault_is_raised_at_once() -> None:
    step = Step(BackendError("replicas > 1 not supported in non-clustered mode"))

    with pytest.raises(BackendError, match="replicas > 1"):
        await while_cluster_forms(step)
    assert step.calls == 1


async def test_once_patience_is_over_the_unavailability_is_raised() -> None:
    step = Step(BackendUnavailableError("still forming"), BackendUnavailableError("never seen"))

    with pytest.raises(BackendUnavailableError, match="still forming"):
        await while_cluster_forms(step, patience=timedelta(0))
    assert step.calls == 1


def test_too_few_peers_for_the_replicas_is_unavailable_for_now() -> None:
    what = "provision stream TASK_QUEUES"
    with (
        pytest.raises(BackendUnavailableError, match="no suitable peers"),
        translated(what),
        placing(what),
    ):
        nats.js.errors.APIError.from_error(
            {"code": 500, "err_code": 10005, "description": "no suitable peers for placement"}
        )


def test_an_adopted_stream_with_fewer_replicas_is_warned_about_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        warn_if_fewer_replicas("KV bucket bridge_leases", 1, 3)
        warn_if_fewer_replicas("stream TASK_QUEUES", 5, 3)
        warn_if_fewer_replicas("stream WORKFLOW_HISTORY", 3, 3)

    assert [record.getMessage() for record in caplog.records] == [
        "KV bucket bridge_leases exists with 1 replicas, fewer than the 3 asked; left as it is"
    ]
