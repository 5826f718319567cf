"""`--replicas N`: a flag and an environment variable, 1..5, and only against a NATS cluster."""

from __future__ import annotations

import pytest

from app.cli import main, parser, settings_from
from app.settings import Backend, Settings

CLUSTER = "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"


def test_one_replica_is_the_default() -> None:
    assert settings_from(parser().parse_args(["serve"]), {}).replicas == 1


def test_the_flag_wins_over_the_environment() -> None:
    environ = {"DAGNATS_BRIDGE_NATS_URL": CLUSTER, "DAGNATS_BRIDGE_REPLICAS": "5"}

    from_env = settings_from(parser().parse_args(["serve"]), environ)
    from_flag = settings_from(parser().parse_args(["serve", "--replicas", "3"]), environ)

    assert (from_env.replicas, from_flag.replicas) == (5, 3)


@pytest.mark.parametrize("replicas", ["0", "6", "-1"])
def test_replicas_outside_one_to_five_are_refused_naming_the_setting(
    replicas: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["serve", "--nats-url", CLUSTER, "--replicas", replicas])

    assert status == 2
    assert "'replicas' must be" in capsys.readouterr().err


def test_replicas_that_are_not_a_number_are_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--replicas", "three"])

    assert exit_info.value.code == 2
    assert "--replicas" in capsys.readouterr().err


NEEDS_A_CLUSTER = r"--replicas above 1 needs a NATS cluster \(--nats-url\)"


def test_more_than_one_replica_needs_a_nats_cluster() -> None:
    with pytest.raises(ValueError, match=NEEDS_A_CLUSTER):
        Settings(replicas=3, backend=Backend.MEMORY)
    with pytest.raises(ValueError, match=NEEDS_A_CLUSTER):
        Settings(replicas=3)  # the embedded nats-server: a single node


def test_one_replica_is_fine_everywhere() -> None:
    assert Settings(backend=Backend.MEMORY).replicas == 1
    assert Settings(replicas=5, nats_url=CLUSTER).replicas == 5
