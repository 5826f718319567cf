"""`--workers N`: where it is refused, and how a worker gets the parent's settings."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from app import supervisor
from app.cli import main, parser, settings_from
from app.logging_setup import LogFormat
from app.settings import Backend, Settings
from app.supervisor import LISTEN_FD_ENV
from app.workers import inherited_socket, worker_environment


def test_one_worker_is_the_default() -> None:
    assert Settings().workers == 1


def test_workers_on_the_memory_backend_are_refused_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["serve", "--backend", "memory", "--workers", "2"])

    assert status == 2
    assert "--workers above 1 needs the NATS backend" in capsys.readouterr().err


def test_workers_with_the_engine_simulation_are_refused_with_the_way_out() -> None:
    with pytest.raises(ValueError, match="--no-simulate-engine"):
        Settings(workers=2)


def test_workers_need_at_least_one() -> None:
    with pytest.raises(ValueError, match="workers"):
        Settings(workers=0)


def test_a_worker_reads_back_exactly_the_parents_settings_as_one_worker() -> None:
    parent = Settings(
        backend=Backend.NATS,
        host="0.0.0.0",  # noqa: S104 - a value under test, nothing binds it
        port=9000,
        nats_url="nats://127.0.0.1:4222,nats://127.0.0.1:4223",
        provision=True,
        simulator=True,
        simulate_engine=False,
        metrics_auth=True,
        log_format=LogFormat.JSON,
        tokens_file=Path("/etc/bridge/tokens"),
        drain_seconds=3.5,
        sim_backoff_factor=1.5,
        token="s3cret-token",
        workers=3,
    )

    environment = worker_environment(parent, {"PATH": "/bin", "DAGNATS_BRIDGE_PORT": "1"})
    child = settings_from(parser().parse_args(["serve"]), environment)

    assert child == attrs.evolve(parent, workers=1)
    assert environment["PATH"] == "/bin"


def test_a_bridge_of_its_own_has_no_inherited_socket() -> None:
    assert inherited_socket({}) is None
    assert inherited_socket({LISTEN_FD_ENV: ""}) is None


def test_the_command_line_leaves_the_web_stack_to_the_processes_that_serve() -> None:
    """Each command loads what it runs: importing the CLI must not load the app, nor what
    only serving, the sim client or `--version` use (a sim verb or a `--workers` parent,
    before its exec, has no use for them)."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, app.cli; print(*sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()

    assert not {"litestar", "nats", "uvicorn", "app.container"} & set(loaded)
    assert not {"asyncio", "ssl", "urllib.request", "importlib.metadata"} & set(loaded)


def test_the_supervisor_loads_only_the_standard_library_and_the_logging_setup() -> None:
    """What supervises `--workers` for the bridge's life holds no more than it needs."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, app.supervisor; print(*sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    project = {name for name in loaded if name.split(".")[0] in {"adapters", "app", "domain"}}

    assert project == {
        "app",
        "app.early_stops",
        "app.logging_setup",
        "app.parent_death",
        "app.supervisor",
    }
    assert not {"attrs", "asyncio", "msgspec", "ssl", "hashlib", "nats", "litestar"} & set(loaded)
    assert "ctypes.util" not in loaded  # its library search runs ldconfig between fork and exec


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_worker_starts_with_its_stop_signals_blocked_and_sighup_ignored() -> None:
    """Until the worker notes them (app.early_stops): one passed on while its interpreter
    starts would kill it."""
    status = subprocess.run(
        [sys.executable, "-c", "print(open('/proc/self/status').read())"],
        preexec_fn=supervisor._before_exec,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)

    def has(mask: str, signum: signal.Signals) -> bool:
        return bool(int(fields[mask], 16) & 1 << (signum - 1))

    assert has("SigBlk", signal.SIGTERM)
    assert has("SigBlk", signal.SIGINT)
    assert has("SigIgn", signal.SIGHUP)
