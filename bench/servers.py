"""HTTP server CPU per request: uvicorn (uvloop, httptools, as the bridge serves) against
Granian, both serving the trivial Litestar app to the benchmark's keep-alive fleet.

`python -m bench.servers` (the bench extra has both): the servers take turns, `--rounds`
windows of `--seconds` each; it prints the median requests/s and CPU microseconds per request
of each server's processes. Not part of `make bench`: it answers whether the choice of server
could close the bridge's gap (at batch 10 the bridge answers one request per five tasks).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Final

from bench.load import BridgeClient, fleet_session, hammer
from bench.procs import (
    ServerProcess,
    cpu_seconds,
    spawn_trivial,
    spawn_trivial_on_granian,
    wait_healthy,
)
from bench.stats import median

FLEET: Final = 16
Figures = dict[str, list[tuple[float, float]]]
"""Per server, the (requests/s, CPU µs per request) of each window."""
SERVERS: Final[dict[str, Callable[[Path], ServerProcess]]] = {
    "uvicorn (uvloop, httptools)": spawn_trivial,
    "granian (asgi, uvloop)": spawn_trivial_on_granian,
}


async def window(server: ServerProcess, seconds: float) -> tuple[float, float]:
    """Requests/s the fleet gets from `server`, and the server's CPU µs per request."""
    async with fleet_session(FLEET) as session:
        client = BridgeClient(session, server.url)
        before = cpu_seconds(server.processes())
        sent = await hammer([client], FLEET, seconds)
        used = cpu_seconds(server.processes()) - before
    return sent / seconds, 1e6 * used / sent


async def compare(
    rounds: int, seconds: float, log_dir: Path
) -> dict[str, list[tuple[float, float]]]:
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in SERVERS}
    for _ in range(rounds):
        for name, spawn in SERVERS.items():
            server = spawn(log_dir)
            try:
                await wait_healthy([server])
                figures[name].append(await window(server, seconds))
            finally:
                server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.servers", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dagnats-servers-") as log_dir:
        figures = asyncio.run(compare(args.rounds, args.seconds, Path(log_dir)))
    print(f"trivial Litestar app, fleet of {FLEET}, median of {args.rounds} x {args.seconds:g} s")
    print(f"{'server':30} {'requests/s':>11} {'CPU µs/request':>15}")
    for name, runs in figures.items():
        rate = median([r for r, _ in runs])
        cost = median([c for _, c in runs])
        print(f"{name:30} {rate:11,.0f} {cost:15.1f}")


if __name__ == "__main__":
    main()
