"""The composition root and the CLI's settings."""

from __future__ import annotations

import argparse
from datetime import timedelta

import pytest
from dependency_injector import providers

from adapters.memory.clock import ManualClock
from app.cli import parser, settings_from
from app.container import Container
from app.settings import Backend, ClockKind
from domain.services.engine import ObservedEventLog, RetryPolicy
from tests.factories import memory_container


def serve_args(*flags: str) -> argparse.Namespace:
    return parser().parse_args(["serve", *flags])


def test_every_provider_of_the_container_resolves() -> None:
    container = memory_container()

    resolved = {
        name: provider()
        for name, provider in container.providers.items()
        if not isinstance(provider, providers.Dependency)
    }

    assert all(value is not None for value in resolved.values())
    assert resolved["poll_service"].queue is resolved["queue"]
    assert resolved["resolve_service"].leases is resolved["poll_service"].leases
    assert resolved["release_leases"].locks is resolved["resolve_service"].locks
    assert resolved["worker_registry"].release is resolved["release_leases"]
    assert resolved["poll_service"].answers is resolved["poll_answers"]


def test_a_flag_wins_over_its_environment_variable_which_wins_over_the_default() -> None:
    environ = {"DAGNATS_BRIDGE_PORT": "9000", "DAGNATS_BRIDGE_ACK_WAIT_MS": "1000"}

    settings = settings_from(serve_args("--port", "9100"), environ)

    assert settings.port == 9100
    assert settings.ack_wait_ms == 1000
    assert settings.max_body_bytes == 1_048_576
    assert settings.backend is Backend.NATS
    assert settings.needs_embedded_nats
    assert settings.token is None


def test_the_token_comes_from_the_environment_and_is_not_in_the_settings_repr() -> None:
    settings = settings_from(serve_args(), {"DAGNATS_BRIDGE_TOKEN": "hunter2"})

    assert settings.token == "hunter2"
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    "environ",
    [{"DAGNATS_BRIDGE_PORT": "eighty"}, {"DAGNATS_BRIDGE_MAX_BODY_BYTES": "0"}],
)
def test_an_invalid_setting_is_refused(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"."):
        settings_from(serve_args(), environ)


def test_a_nats_url_may_name_several_servers_of_a_cluster() -> None:
    settings = settings_from(
        serve_args("--nats-url", "nats://a:4222, nats://b:4222,,nats://c:4222"), {}
    )

    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
    assert not settings.needs_embedded_nats


def test_switches_come_from_flags_or_true_words_in_the_environment() -> None:
    from_env = settings_from(serve_args(), {"DAGNATS_BRIDGE_PROVISION": "yes"})
    from_flag = settings_from(serve_args("--simulator"), {})

    assert (from_env.provision, from_env.simulator) == (True, False)
    assert (from_flag.provision, from_flag.simulator) == (False, True)


@pytest.mark.parametrize(
    ("flags", "environ", "simulates"),
    [
        (("--backend", "memory"), {}, True),
        ((), {}, True),  # the embedded nats-server
        (("--nats-url", "nats://a:4222"), {}, False),
        (("--nats-url", "nats://a:4222", "--simulate-engine"), {}, True),
        (("--nats-url", "nats://a:4222"), {"DAGNATS_BRIDGE_SIMULATE_ENGINE": "yes"}, True),
        (("--backend", "memory", "--no-simulate-engine"), {}, False),
        (("--backend", "memory"), {"DAGNATS_BRIDGE_SIMULATE_ENGINE": "off"}, False),
        (("--simulate-engine",), {"DAGNATS_BRIDGE_SIMULATE_ENGINE": "0"}, True),
    ],
)
def test_the_engine_simulation_is_on_by_default_except_against_an_external_nats(
    flags: tuple[str, ...], environ: dict[str, str], simulates: bool
) -> None:
    settings = settings_from(serve_args(*flags), environ)

    assert settings.simulates_engine is simulates
    assert settings.serves_simulator or not simulates


def test_a_word_that_is_neither_yes_nor_no_is_refused() -> None:
    with pytest.raises(ValueError, match="yes or no word"):
        settings_from(serve_args(), {"DAGNATS_BRIDGE_SIMULATE_ENGINE": "maybe"})


def test_the_manual_clock_comes_from_a_flag_or_the_environment_with_the_memory_backend() -> None:
    from_flag = settings_from(serve_args("--backend", "memory", "--clock", "manual"), {})
    from_env = settings_from(
        serve_args(), {"DAGNATS_BRIDGE_BACKEND": "memory", "DAGNATS_BRIDGE_CLOCK": "manual"}
    )

    assert from_flag.clock is from_env.clock is ClockKind.MANUAL
    assert settings_from(serve_args(), {}).clock is ClockKind.SYSTEM


@pytest.mark.parametrize(
    "environ",
    [
        {"DAGNATS_BRIDGE_CLOCK": "manual"},
        {"DAGNATS_BRIDGE_CLOCK": "sundial", "DAGNATS_BRIDGE_BACKEND": "memory"},
        {"DAGNATS_BRIDGE_SIM_MAX_ATTEMPTS": "0"},
        {"DAGNATS_BRIDGE_SIM_BACKOFF_FACTOR": "fast"},
        {"DAGNATS_BRIDGE_SIM_RUNS_KEPT": "0"},
    ],
)
def test_a_manual_clock_without_the_memory_backend_or_a_bad_simulator_setting_is_refused(
    environ: dict[str, str],
) -> None:
    with pytest.raises(ValueError, match=r"."):
        settings_from(serve_args(), environ)


def test_the_retry_policy_of_the_engine_simulation_is_configurable() -> None:
    flags = ("--backend", "memory", "--sim-max-attempts", "5", "--sim-backoff-factor", "1.5")
    settings = settings_from(serve_args(*flags), {"DAGNATS_BRIDGE_SIM_INITIAL_DELAY_MS": "250"})

    policy = Container(settings=settings).retry_policy()

    assert policy == RetryPolicy(
        max_attempts=5, initial_delay=timedelta(milliseconds=250), factor=1.5
    )


def test_the_runs_the_simulator_keeps_come_from_a_flag_or_the_environment() -> None:
    from_flag = settings_from(serve_args("--backend", "memory", "--sim-runs-kept", "7"), {})
    from_env = settings_from(
        serve_args(), {"DAGNATS_BRIDGE_BACKEND": "memory", "DAGNATS_BRIDGE_SIM_RUNS_KEPT": "7"}
    )

    assert from_flag.sim_runs_kept == from_env.sim_runs_kept == 7


def test_with_the_engine_simulation_the_use_cases_append_through_the_observed_log() -> None:
    on = memory_container(clock=ClockKind.MANUAL)
    off = memory_container(simulate_engine=False)

    assert isinstance(on.events(), ObservedEventLog)
    assert on.events().observer is on.engine()
    assert on.resolve_service().events is on.events()
    assert on.advance_clock().clock is on.clock()
    assert isinstance(on.clock(), ManualClock)
    assert off.events() is off.history()
    assert off.advance_clock().clock is None
    assert off.advance_clock().engine is None
    assert on.enqueue_task().runs is on.engine().runs
