"""What one benchmark run does: sizes, durations, and where it writes its figures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import attrs

BATCH_SIZES: Final = (1, 10, 100)
TARGET_BATCH: Final = 10
"""The batch size the throughput, CPU and latency targets are judged at."""
RESULTS_DIR: Final = Path(__file__).parent / "results"


@attrs.frozen(kw_only=True)
class BenchConfig:
    """`tasks` per throughput round; `fleet` HTTP workers, and as many direct fetch loops."""

    quick: bool
    rounds: int
    tasks: int
    bridges: int
    separate_ports: bool = False
    """N bridges on N ports instead of one bridge with `--workers N` on one port."""
    batch_resolve: bool = False
    """The fleet completes a poll's tasks with one `POST /v1/tasks/resolve`."""
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    """Must hold TARGET_BATCH, which the targets are judged at."""
    fleet: int
    paced_seconds: float
    idle_polls: int
    idle_window_seconds: float
    leases: int
    ceiling_seconds: float
    out_dir: Path = RESULTS_DIR

    @property
    def stem(self) -> str:
        """Quick runs never overwrite the figures of a full run."""
        return "quick" if self.quick else "latest"


FULL: Final = BenchConfig(
    quick=False,
    rounds=3,
    tasks=5000,
    bridges=os.cpu_count() or 1,
    fleet=16,
    paced_seconds=8.0,
    idle_polls=1000,
    idle_window_seconds=10.0,
    leases=10_000,
    ceiling_seconds=5.0,
)
QUICK: Final = attrs.evolve(
    FULL,
    quick=True,
    rounds=1,
    tasks=400,
    paced_seconds=2.0,
    idle_window_seconds=5.0,
    leases=2000,
    ceiling_seconds=2.0,
)
