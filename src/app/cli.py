"""`dagnats-bridge serve`: flags, each also a `DAGNATS_BRIDGE_*` environment variable.

`dagnats-bridge sim enqueue|events|runs`: the simulator of a running bridge, over HTTP.

`dagnats-bridge conformance`: the protocol spec, run against a running bridge."""

from __future__ import annotations

import argparse
import enum
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from app.early_stops import noting_stops
from app.embedded import EmbeddedNats, EmbeddedNatsError
from app.json_lines import msgspec_json
from app.logging_setup import LogFormat, configure_logging
from app.settings import Backend, ClockKind, Settings
from app.sim_target import DEFAULT_URL, URL_ENV, Bridge, http_url, raw_json
from app.tokens import TokenSource
from app.workers import supervise
from conformance import DEFAULT_EXAMPLES

log = logging.getLogger("dagnats_bridge")

ENV_PREFIX: Final = "DAGNATS_BRIDGE_"
TOKEN_ENV: Final = "DAGNATS_BRIDGE_TOKEN"  # noqa: S105 - the variable's name, not a secret
TRUE_WORDS: Final = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS: Final = frozenset({"0", "false", "no", "off"})

VALUED: Final[dict[str, Callable[[str], Any]]] = {
    "backend": Backend,
    "host": str,
    "port": int,
    "heartbeat_interval_ms": int,
    "ack_wait_ms": int,
    "max_body_bytes": int,
    "log_level": str,
    "log_format": LogFormat,
    "nats_url": str,
    "nats_creds": Path,
    "nats_tls_ca": Path,
    "nats_tls_cert": Path,
    "nats_tls_key": Path,
    "data_dir": Path,
    "clock": ClockKind,
    "sim_max_attempts": int,
    "sim_initial_delay_ms": int,
    "sim_backoff_factor": float,
    "sim_max_iterations": int,
    "sim_runs_kept": int,
    "tokens_file": Path,
    "drain_seconds": float,
    "drain_min_seconds": float,
    "replicas": int,
    "workers": int,
}
SWITCHES: Final = ("provision", "simulator", "metrics_auth")
TRISTATE: Final = ("simulate_engine",)
"""On or off when given (`--x` / `--no-x`, or a yes/no word in the environment), else the
mode's default."""


class _PrintVersion(argparse.Action):
    """`--version`, whose version is looked up only when asked for: importlib.metadata costs
    every process that parses a command line 2 MiB, the `--workers` parent among them."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs=0,
            default=argparse.SUPPRESS,
            help="show program's version number and exit",
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from app.version import package_version  # noqa: PLC0415

        print(f"{parser.prog} {package_version()}")
        parser.exit()


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="dagnats-bridge", description=__doc__)
    root.add_argument("--version", action=_PrintVersion)
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the HTTP bridge")
    defaults = Settings()
    for name, kind in VALUED.items():
        default = getattr(defaults, name)
        shown = default.value if isinstance(default, enum.Enum) else default
        choices = ""
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            choices = f"; one of {', '.join(member.value for member in kind)}"
        serve.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=None,
            help=f"(env {ENV_PREFIX}{name.upper()}, default {shown}{choices})",
        )
    for name in SWITCHES:
        serve.add_argument(
            f"--{name.replace('_', '-')}",
            action="store_true",
            default=None,
            help=f"(env {ENV_PREFIX}{name.upper()})",
        )
    for name in TRISTATE:
        serve.add_argument(
            f"--{name.replace('_', '-')}",
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"(env {ENV_PREFIX}{name.upper()}, default by mode)",
        )
    _add_sim(commands)
    _add_conformance(commands)
    return root


def _add_sim(commands: Any) -> None:
    """`--url` and `--token` go before or after the verb."""
    sim = commands.add_parser("sim", help="drive the simulator of a running bridge")
    _add_connection(sim, default=None)
    connection = argparse.ArgumentParser(add_help=False)
    _add_connection(connection, default=argparse.SUPPRESS)
    verbs = sim.add_subparsers(dest="verb", required=True)
    enqueue = verbs.add_parser(
        "enqueue", parents=[connection], help="enqueue a task as the engine would"
    )
    enqueue.add_argument(
        "--type", required=True, dest="task_type", metavar="TYPE", help="the task type"
    )
    enqueue.add_argument(
        "--input",
        type=_json_argument,
        metavar="JSON",
        help="the task's input, sent byte for byte (default: none)",
    )
    enqueue.add_argument("--run-id", help="(default: the bridge makes one)")
    enqueue.add_argument("--step-id", help="(default: step-1)")
    events = verbs.add_parser(
        "events", parents=[connection], help="a run's history events, one JSON line each"
    )
    events.add_argument("run_id", metavar="RUN_ID")
    events.add_argument(
        "--follow", action="store_true", help="keep printing new events until Ctrl-C"
    )
    events.add_argument(
        "--until-done",
        action="store_true",
        help="follow until a workflow.completed or workflow.failed event (implies --follow)",
    )
    verbs.add_parser(
        "runs", parents=[connection], help="the engine simulation's runs, one JSON line each"
    )


def _add_connection(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "--url",
        type=_http_url,
        default=default,
        help=f"the bridge (env {URL_ENV}, default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=default,
        help=f"bearer token (env {TOKEN_ENV}, better: ps shows no environment)",
    )


def _json_argument(text: str) -> bytes:
    try:
        return raw_json(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _http_url(text: str) -> str:
    try:
        return http_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    """A flag wins over its environment variable, which wins over the default."""
    values: dict[str, Any] = {}
    for name, kind in VALUED.items():
        flag, env = getattr(args, name), environ.get(f"{ENV_PREFIX}{name.upper()}")
        if flag is not None:
            values[name] = flag
        elif env:
            values[name] = kind(env)
    for name in SWITCHES:
        env = environ.get(f"{ENV_PREFIX}{name.upper()}", "")
        values[name] = bool(getattr(args, name)) or env.lower() in TRUE_WORDS
    for name in TRISTATE:
        flag, env = getattr(args, name), environ.get(f"{ENV_PREFIX}{name.upper()}", "").lower()
        if flag is not None:
            values[name] = flag
        elif env in TRUE_WORDS | FALSE_WORDS:
            values[name] = env in TRUE_WORDS
        elif env:
            raise ValueError(f"{ENV_PREFIX}{name.upper()} is a yes or no word, not {env!r}")
    return Settings(token=environ.get(TOKEN_ENV) or None, **values)


def bridge_from(args: argparse.Namespace, environ: Mapping[str, str]) -> Bridge:
    """A flag wins over its environment variable, which wins over the default."""
    token = args.token or environ.get(TOKEN_ENV) or None
    if token is not None and not (token.isascii() and token.isprintable()):
        raise ValueError("the token has characters an HTTP header cannot carry")
    url = args.url or environ.get(URL_ENV) or DEFAULT_URL
    try:
        return Bridge(url=url, token=token)
    except ValueError as exc:
        raise ValueError(f"{URL_ENV}: {exc}") from None


def _add_conformance(commands: Any) -> None:
    check = commands.add_parser(
        "conformance",
        help="run the protocol spec against a running bridge",
        description="Run the protocol spec (Hypothesis properties and a state machine, over "
        "HTTP) against a running bridge and print PASS or FAIL per property.",
    )
    _add_connection(check, default=None)
    check.add_argument(
        "--nats-url",
        metavar="URL",
        help="publish tasks and read histories on this NATS, as the engine does "
        "(default: through the bridge's /v1/sim/ endpoints)",
    )
    check.add_argument(
        "--examples",
        type=int,
        default=DEFAULT_EXAMPLES,
        help=f"examples per property (default {DEFAULT_EXAMPLES})",
    )
    check.add_argument("--seed", type=int, help="Hypothesis seed, to repeat a run")


def conformance(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    # Here, not at the top: Hypothesis and the spec cost `serve` a quarter of a second, and
    # the sim client (sim_commands) loads ssl, which `serve`'s parent has no use for.
    from app.sim_commands import INTERRUPTED  # noqa: PLC0415
    from conformance import runner as conformance_runner  # noqa: PLC0415

    try:
        bridge = bridge_from(args, environ)
        if args.examples < 1:
            raise ValueError("--examples must be at least 1")
    except ValueError as exc:
        print(f"dagnats-bridge: invalid setting: {exc}", file=sys.stderr)
        return 2
    options = conformance_runner.Options(
        url=bridge.url,
        token=bridge.token,
        nats_url=args.nats_url,
        examples=args.examples,
        seed=args.seed,
    )
    try:
        return conformance_runner.run(options, sys.stdout)
    except conformance_runner.CannotCheckError as exc:
        print(f"dagnats-bridge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return INTERRUPTED


def sim(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    try:
        bridge = bridge_from(args, environ)
    except ValueError as exc:
        print(f"dagnats-bridge: invalid setting: {exc}", file=sys.stderr)
        return 2
    # Here, not at the top: the HTTP client loads ssl, which `serve`'s parent has no use for.
    from app import sim_commands  # noqa: PLC0415

    return sim_commands.run_verb(bridge, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "conformance":
        return conformance(args, os.environ)
    if args.command == "sim":
        return sim(args, os.environ)
    try:
        settings = settings_from(args, os.environ)
        configure_logging(settings.log_level, settings.log_format, encode=msgspec_json)
        tokens = TokenSource.load(settings)
    except ValueError as exc:
        print(f"dagnats-bridge: invalid setting: {exc}", file=sys.stderr)
        return 2
    embedded = EmbeddedNats(settings.data_dir.resolve()) if settings.needs_embedded_nats else None
    try:
        if embedded is not None:
            embedded.start()
            settings = attrs.evolve(
                settings,
                nats_url=embedded.url,
                provision=True,
                simulator=True,
                simulate_engine=settings.simulates_engine,
            )
        if settings.workers > 1:
            return supervise(settings, embedded.pid if embedded is not None else None)
        # Noted from here on: before the web stack's imports, which are most of a start.
        early_stops = noting_stops()
        # Imported only to serve: the parent of --workers execs into the supervisor instead.
        from app.serving import serve  # noqa: PLC0415

        return serve(settings, tokens, early_stops)
    except EmbeddedNatsError as exc:
        log.error("cannot start the embedded nats-server: %s", exc)
        return 1
    finally:
        if embedded is not None:
            embedded.stop()
