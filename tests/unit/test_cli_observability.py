"""The CLI's version, log and metrics settings."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator

import pytest

from app import serving
from app.cli import main, parser, settings_from
from app.logging_setup import LogFormat
from app.settings import Settings
from app.tokens import TokenSource
from app.version import package_version


def serve_args(*flags: str) -> argparse.Namespace:
    return parser().parse_args(["serve", *flags])


def refuse_to_serve(settings: Settings, tokens: TokenSource) -> None:
    raise AssertionError(f"served despite log level {settings.log_level!r}")


@pytest.fixture
def nothing_served(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`main` fails instead of serving, and leaves the root logger as it found it."""
    monkeypatch.setattr(serving, "serve", refuse_to_serve)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_version_prints_the_installed_distribution_version(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])

    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"dagnats-bridge {package_version()}\n"
    assert package_version() != "0.0.0"


def test_the_log_format_and_metrics_auth_come_from_flags_or_the_environment() -> None:
    environ = {"DAGNATS_BRIDGE_LOG_FORMAT": "text", "DAGNATS_BRIDGE_METRICS_AUTH": "yes"}

    from_env = settings_from(serve_args(), environ)
    from_flags = settings_from(serve_args("--log-format", "json", "--metrics-auth"), {})
    defaults = settings_from(serve_args(), {})

    assert (from_env.log_format, from_env.metrics_auth) == (LogFormat.TEXT, True)
    assert (from_flags.log_format, from_flags.metrics_auth) == (LogFormat.JSON, True)
    assert (defaults.log_format, defaults.metrics_auth) == (LogFormat.AUTO, False)


@pytest.mark.usefixtures("nothing_served")
@pytest.mark.parametrize(
    "environ",
    [{"DAGNATS_BRIDGE_LOG_LEVEL": "chatty"}, {"DAGNATS_BRIDGE_LOG_FORMAT": "xml"}],
)
def test_a_bad_log_setting_is_refused_before_serving(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)

    status = main(["serve", "--backend", "memory"])

    assert status == 2
    assert capsys.readouterr().err.startswith("dagnats-bridge: invalid setting:")
