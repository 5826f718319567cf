"""The composition root and the CLI's settings."""

from __future__ import annotations

import argparse

import pytest
from dependency_injector import providers

from app.cli import parser, settings_from
from app.settings import Backend
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
