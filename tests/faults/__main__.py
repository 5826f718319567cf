"""`python -m tests.faults [--tasks N] [SCENARIO ...]`: run the fault scenarios (all by default)
with N tasks each and print the reliability table; exit 1 unless every run lost nothing,
doubled nothing and finished within its bound."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Final

from tests.faults.scenarios import SCENARIOS, FaultResult, table

DEFAULT_TASKS: Final = 2_000


async def run_all(names: list[str], tasks: int, root: Path) -> list[FaultResult]:
    results = []
    for name in names:
        result = await SCENARIOS[name](root / name, tasks)
        print(
            f"{name}: lost {result.lost}, duplicated {result.duplicated}, "
            f"unexpected {result.unexpected}, total {result.total_s:.1f} s, "
            f"retries {result.retries}, given up {result.given_up}, "
            f"left in TASK_QUEUES {result.left_in_stream}",
            file=sys.stderr,
            flush=True,
        )
        for task_id, history in result.doubled.items():
            print(f"  doubled {task_id}: {'; '.join(history)}", file=sys.stderr, flush=True)
        results.append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--tasks", type=int, default=DEFAULT_TASKS, help="tasks per scenario")
    parser.add_argument("--keep", type=Path, help="keep stores and logs in this folder")
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=", ".join(SCENARIOS))
    args = parser.parse_args()
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    names = args.scenarios or list(SCENARIOS)
    if args.keep is not None:
        results = asyncio.run(run_all(names, args.tasks, args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="dagnats-faults-") as folder:
            results = asyncio.run(run_all(names, args.tasks, Path(folder)))
    print(table(results))
    return 0 if all(result.passed for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
