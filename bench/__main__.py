"""`python -m bench`: start the rig, run every phase, write the figures, print the table."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import nats
from tqdm import tqdm

from adapters.nats.consumers import TypeConsumers
from adapters.wire import TASK_STREAM
from app.embedded import EmbeddedNats
from bench import phases
from bench.config import FULL, QUICK, TARGET_BATCH, BenchConfig
from bench.direct import ACK_WAIT, DirectWorkerProcess
from bench.install import installed_bridge
from bench.load import BridgeClient, fleet_session
from bench.procs import (
    ROOT,
    ServerProcess,
    nats_server_process,
    spawn_bridge,
    spawn_trivial,
    wait_healthy,
)
from bench.report import HALF_LOAD, summarise_batch, table, targets, write_chart, write_json

TUNABLE = {
    "rounds": "throughput rounds per batch size",
    "tasks": "tasks per throughput round",
    "bridges": "bridge processes (default: one per CPU)",
    "fleet": "concurrent HTTP workers, and direct fetch loops",
    "leases": "leases held in the memory phase",
}
"""Set by `--name N` or the environment variable BENCH_NAME."""


def parse_config(argv: Sequence[str] | None = None) -> BenchConfig:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        default=bool(os.environ.get("BENCH_QUICK")),
        help="one short round of everything, written to results/quick.* (env BENCH_QUICK=1)",
    )
    for name, meaning in TUNABLE.items():
        parser.add_argument(f"--{name}", type=int, help=f"{meaning} (env BENCH_{name.upper()})")
    parser.add_argument(
        "--separate-ports",
        action="store_true",
        default=bool(os.environ.get("BENCH_SEPARATE_PORTS")),
        help="run the bridges as processes on ports of their own, the fleet spread over them, "
        "instead of one bridge with --workers on one port (env BENCH_SEPARATE_PORTS=1)",
    )
    parser.add_argument(
        "--batch-resolve",
        action="store_true",
        default=bool(os.environ.get("BENCH_BATCH_RESOLVE")),
        help="the fleet completes each poll's tasks with one POST /v1/tasks/resolve "
        "(env BENCH_BATCH_RESOLVE=1)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=_batch_sizes,
        default=os.environ.get("BENCH_BATCH_SIZES"),
        help=f"comma-separated poll sizes, {TARGET_BATCH} among them "
        "(default 1,10,100; env BENCH_BATCH_SIZES)",
    )
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL

    def chosen(name: str) -> int:
        given = getattr(args, name) or os.environ.get(f"BENCH_{name.upper()}")
        return int(given) if given else int(getattr(config, name))

    return attrs.evolve(
        config,
        rounds=chosen("rounds"),
        tasks=chosen("tasks"),
        bridges=chosen("bridges"),
        fleet=chosen("fleet"),
        leases=chosen("leases"),
        separate_ports=args.separate_ports,
        batch_resolve=args.batch_resolve,
        batch_sizes=args.batch_sizes or config.batch_sizes,
    )


def _batch_sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(int(size) for size in text.split(","))
    if TARGET_BATCH not in sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"positive sizes, {TARGET_BATCH} among them")
    return sizes


def step_count(config: BenchConfig) -> int:
    per_batch = config.rounds * 2 + 2
    return 2 + len(config.batch_sizes) * per_batch + 2


@contextlib.contextmanager
def servers(processes: list[ServerProcess]) -> Iterator[list[ServerProcess]]:
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()


async def measure_ceiling(config: BenchConfig, log_dir: Path) -> dict[str, float]:
    with servers([spawn_trivial(log_dir) for _ in range(config.bridges)]) as trivial:
        await wait_healthy(trivial)
        async with fleet_session(config.fleet) as session:
            clients = [BridgeClient(session, server.url) for server in trivial]
            return await phases.generator_ceiling(clients, config.fleet, config.ceiling_seconds)


@contextlib.asynccontextmanager
async def rig(config: BenchConfig, work_dir: Path, bridge: Path) -> AsyncIterator[phases.Rig]:
    """An embedded nats-server, the bridge processes (`bridge`, the command; one port with
    `--workers`, or one port each, the first provisioning alone), the direct worker."""
    embedded = EmbeddedNats(work_dir / "nats")
    embedded.start()
    workers = 1 if config.separate_ports else config.bridges
    try:
        with servers([spawn_bridge(bridge, embedded.url, work_dir, workers)]) as bridges:
            await wait_healthy(bridges)
            if config.separate_ports:
                bridges += [
                    spawn_bridge(bridge, embedded.url, work_dir) for _ in range(config.bridges - 1)
                ]
                await wait_healthy(bridges)
            nc = await nats.connect(embedded.url)
            direct = await DirectWorkerProcess.start(embedded.url)
            try:
                async with fleet_session(config.fleet) as session:
                    js = nc.jetstream()
                    yield phases.Rig(
                        config=config,
                        js=js,
                        consumers=TypeConsumers(nc, js, TASK_STREAM, ACK_WAIT),
                        bridges=bridges,
                        bridge_stats=[p for bridge in bridges for p in bridge.processes()],
                        nats_stats=nats_server_process(),
                        direct=direct,
                        clients=[BridgeClient(session, bridge.url) for bridge in bridges],
                    )
            finally:
                await direct.close()
                await nc.drain()
    finally:
        embedded.stop()


async def measure_batch(the_rig: phases.Rig, batch: int, progress: tqdm[Any]) -> dict[str, Any]:
    rounds: list[dict[str, dict[str, float]]] = []
    for number in range(1, the_rig.config.rounds + 1):
        progress.set_description(f"batch {batch}: round {number} direct")
        direct = await phases.direct_round(the_rig, batch)
        progress.update()
        progress.set_description(f"batch {batch}: round {number} bridge")
        bridge = await phases.bridge_round(the_rig, batch)
        progress.update()
        rounds.append({"direct": direct, "bridge": bridge})
    rate = HALF_LOAD * sorted(r["bridge"]["tasks_per_s"] for r in rounds)[len(rounds) // 2]
    progress.set_description(f"batch {batch}: direct at {rate:,.0f} tasks/s")
    paced_direct = await phases.direct_paced(the_rig, batch, rate)
    progress.update()
    progress.set_description(f"batch {batch}: bridge at {rate:,.0f} tasks/s")
    paced_bridge = await phases.bridge_paced(the_rig, batch, rate)
    progress.update()
    return summarise_batch(rounds, {"direct": paced_direct, "bridge": paced_bridge}, rate)


async def run(config: BenchConfig) -> dict[str, Any]:
    bridge = installed_bridge()
    results: dict[str, Any] = {
        "config": _plain(config),
        "cpus": os.cpu_count(),
        "bridge": str(bridge.relative_to(ROOT)),
    }
    with (
        tempfile.TemporaryDirectory(prefix="dagnats-bench-") as work,
        tqdm(total=step_count(config), unit="phase", file=sys.stderr) as progress,
    ):
        work_dir = Path(work)
        progress.set_description("load generator ceiling")
        results["generator_ceiling"] = await measure_ceiling(config, work_dir)
        progress.update()
        progress.set_description("starting nats-server and bridges")
        async with rig(config, work_dir, bridge) as the_rig:
            progress.update()
            results["batches"] = {
                str(batch): await measure_batch(the_rig, batch, progress)
                for batch in config.batch_sizes
            }
            progress.set_description(f"{config.idle_polls} idle long-polls")
            results["idle_polls"] = await phases.idle_polls(the_rig)
            progress.update()
            progress.set_description(f"{config.leases:,} leases in flight")
            results["leases"] = await phases.leases_in_flight(the_rig)
            progress.update()
            progress.set_description("stopping")
    results["targets"] = targets(results)
    return results


def _plain(config: BenchConfig) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in attrs.asdict(config).items()}


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)
    results = asyncio.run(run(config))
    config.out_dir.mkdir(parents=True, exist_ok=True)
    json_path = config.out_dir / f"{config.stem}.json"
    chart_path = config.out_dir / f"{config.stem}.png"
    write_json(results, json_path)
    write_chart(results, chart_path)
    sys.stdout.write(table(results) + f"\n\nwritten: {json_path}, {chart_path}\n")


if __name__ == "__main__":
    main()
