"""Run every property against a bridge and print a report: PASS or FAIL per property, and
for a failure the error with Hypothesis' shrunk counterexample.

The exit status is 0 when every property passed, 1 when one failed or the bridge could not
be checked at all (one line on stderr says why).
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Final, TextIO

import attrs
import nats.errors
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.reporting import with_reporter
from hypothesis.stateful import run_state_machine_as_test

from conformance import DEFAULT_EXAMPLES
from conformance.client import Client, UnreachableError
from conformance.harness import Harness
from conformance.machine import ProtocolMachine
from conformance.properties import (
    bad_input_is_400_naming_the_field,
    raw_json_passes_byte_exact,
    unknown_tasks_are_404,
)
from conformance.spec import ViolationError
from conformance.targets import MissingStreamError, NatsTarget, SimTarget, Target
from domain.redaction import without_userinfo

STATEFUL_STEPS: Final = 20
HYPOTHESIS_HOME_ENV: Final = "HYPOTHESIS_STORAGE_DIRECTORY"


class CannotCheckError(Exception):
    """The bridge (or NATS) cannot be checked at all: unreachable, unauthorized, no simulator."""


@attrs.frozen(kw_only=True)
class Options:
    url: str
    token: str | None = attrs.field(default=None, repr=False)
    nats_url: str | None = attrs.field(default=None, repr=False)
    examples: int = DEFAULT_EXAMPLES
    seed: int | None = None


@attrs.frozen(kw_only=True)
class Outcome:
    name: str
    seconds: float
    error: str | None = None
    counterexample: Sequence[str] = ()

    @property
    def passed(self) -> bool:
        return self.error is None


Check = Callable[[Harness, settings, int], Callable[[], None]]


def _machine(harness: Harness, chosen: settings, number: int) -> Callable[[], None]:
    class ProtocolOverHttp(ProtocolMachine):
        def __init__(self) -> None:
            super().__init__(harness)

    machine_settings = settings(chosen, stateful_step_count=STATEFUL_STEPS)
    machine = seed(number)(ProtocolOverHttp)
    return lambda: run_state_machine_as_test(machine, settings=machine_settings)


def _property(build: Callable[[Harness], Callable[..., None]]) -> Check:
    def prepared(harness: Harness, chosen: settings, number: int) -> Callable[[], None]:
        return seed(number)(chosen(build(harness)))

    return prepared


PROPERTIES: Final[dict[str, tuple[str, Check]]] = {
    "protocol-machine": (
        "hand-outs, every resolve, stale leases, replays and conflicts, against the histories",
        _machine,
    ),
    "bad-input": (
        "bad poll and resolve bodies are 400 problem+json naming the field, and change nothing",
        _property(bad_input_is_400_naming_the_field),
    ),
    "unknown-task": ("a resolve of a task not in flight is 404", _property(unknown_tasks_are_404)),
    "raw-json": (
        "input, checkpoint, signal and output JSON pass through byte for byte",
        _property(raw_json_passes_byte_exact),
    ),
}


def hypothesis_settings(examples: int) -> settings:
    """A bridge is slow next to a function call, and may be remote: no deadline, no health
    checks about speed, no example database left in the working directory."""
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )


def run(options: Options, out: TextIO) -> int:
    chosen_seed = options.seed
    if chosen_seed is None:
        chosen_seed = random.randrange(2**32)  # noqa: S311 - a test seed, not a secret
    client = Client(url=options.url, token=options.token)
    target = _target(options, client)
    harness = Harness(client=client, target=target)
    try:
        _preflight(harness, options)
        print(f"conformance of {without_userinfo(options.url)}: {target.description}", file=out)
        print(f"{options.examples} examples per property, seed {chosen_seed}", file=out, flush=True)
        with _scratch_hypothesis_home():
            chosen = hypothesis_settings(options.examples)
            outcomes = [
                _report(_check(name, build(harness, chosen, chosen_seed), harness), summary, out)
                for name, (summary, build) in PROPERTIES.items()
            ]
    finally:
        target.close(harness.task_types)
    failed = sum(not outcome.passed for outcome in outcomes)
    print(f"{len(outcomes) - failed} passed, {failed} failed", file=out)
    if failed:
        print(f"repeat with --seed {chosen_seed}", file=out)
    return 1 if failed else 0


@contextlib.contextmanager
def _scratch_hypothesis_home() -> Iterator[None]:
    """Hypothesis keeps caches in `.hypothesis/` of the working directory; a check of a
    bridge has nothing to keep, so they go to a temporary directory (unless
    HYPOTHESIS_STORAGE_DIRECTORY says where)."""
    if os.environ.get(HYPOTHESIS_HOME_ENV):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="dagnats-conformance-") as home:
        set_hypothesis_home_dir(home)
        try:
            yield
        finally:
            set_hypothesis_home_dir(None)


def _target(options: Options, client: Client) -> Target:
    if options.nats_url is None:
        return SimTarget(client)
    try:
        return NatsTarget(options.nats_url)
    except MissingStreamError as exc:
        raise CannotCheckError(str(exc)) from None
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        reason = str(exc) or type(exc).__name__
        raise CannotCheckError(
            f"cannot connect to NATS at {without_userinfo(options.nats_url)}: {reason}"
        ) from None


def _preflight(harness: Harness, options: Options) -> None:
    """A manual clock is refused first: even the poll would wait on it. Then one poll
    proves the API is there and the token right; a history read, the source."""
    try:
        if _runs_a_manual_clock(harness.client):
            raise CannotCheckError(
                "the target runs a manual clock: every poll that finds nothing would wait for "
                "a POST /v1/sim/clock/advance; check a bridge served with --clock system"
            )
        answer = harness.client.post_json(
            "/v1/tasks/poll", {"task_types": [harness.task_type("preflight")], "timeout_ms": 1}
        )
        if answer.status == 401:  # noqa: PLR2004 - HTTP Unauthorized
            raise CannotCheckError(
                "unauthorized: give the bridge's token with --token or DAGNATS_BRIDGE_TOKEN"
            )
        if answer.status != 200:  # noqa: PLR2004 - HTTP OK
            raise CannotCheckError(f"POST /v1/tasks/poll answered {answer.describe()}")
        harness.target.history(harness.new_run_id())
    except UnreachableError as exc:
        raise CannotCheckError(str(exc)) from None
    except ViolationError as exc:
        hint = (
            ""
            if options.nats_url
            else (
                " (no simulator? serve the bridge with --simulator, or give --nats-url to publish "
                "tasks on NATS as the engine does)"
            )
        )
        raise CannotCheckError(f"{exc}{hint}") from None
    except (nats.errors.Error, TimeoutError) as exc:
        raise CannotCheckError(
            f"reading the history on NATS: {str(exc) or type(exc).__name__}"
        ) from None


def _runs_a_manual_clock(client: Client) -> bool:
    """Only a manual clock moves on request (others answer 400, or 404 without a simulator);
    a step of 1 ms is the least a probe can move the clock of a bridge others may share."""
    answer = client.post_json("/v1/sim/clock/advance", {"ms": 1})
    return answer.status == 200  # noqa: PLR2004 - HTTP OK


def _check(name: str, test: Callable[[], None], harness: Harness) -> Outcome:
    """Run one property; on failure, the error with what Hypothesis reported of the shrunk
    example (the steps of a state machine, the arguments of a property)."""
    reported: list[str] = []
    harness.violations.clear()
    started = time.monotonic()
    try:
        with with_reporter(lambda value: reported.append(str(value))):
            test()
    except Exception as exc:  # every failure of a property is reported, not raised
        error = f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, ViolationError) and harness.violations:
            # Hypothesis could not replay the failure; the first violation is the news.
            first = harness.violations[0]
            error += f"\nthe first violation seen: {type(first).__name__}: {first}"
        notes = [str(note) for note in getattr(exc, "__notes__", ())]
        return Outcome(
            name=name,
            seconds=time.monotonic() - started,
            error=error,
            counterexample=[*reported, *notes],
        )
    return Outcome(name=name, seconds=time.monotonic() - started)


def _report(outcome: Outcome, summary: str, out: TextIO) -> Outcome:
    verdict = "PASS" if outcome.passed else "FAIL"
    print(f"{verdict}  {outcome.name}: {summary} ({outcome.seconds:.1f} s)", file=out)
    if outcome.error is not None:
        print(_indented(outcome.error), file=out)
        if outcome.counterexample:
            print("      counterexample:", file=out)
            print(_indented("\n".join(outcome.counterexample), "        "), file=out)
    out.flush()
    return outcome


def _indented(text: str, margin: str = "      ") -> str:
    return "\n".join(margin + line for line in text.splitlines())
