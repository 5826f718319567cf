"""Figures into the JSON file, the one-screen table with the targets, and the chart."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from matplotlib.figure import Figure

from bench.config import TARGET_BATCH
from bench.stats import median

SIDES: Final = ("direct", "bridge")
FIGURES: Final = ("tasks_per_s", "cpu_s_per_1k", "nats_cpu_s_per_1k")
HALF_LOAD: Final = 0.5
COLORS: Final = {"direct": "tab:blue", "bridge": "tab:orange"}
MIB_PER_MB: Final = 1e6 / 2**20
"""The memory targets are in MB (10^6 bytes) and the figures in MiB: 150 MB is 143.05 MiB."""


def summarise_batch(
    rounds: Sequence[Mapping[str, Mapping[str, float]]],
    paced: Mapping[str, Mapping[str, Any]],
    rate: float,
) -> dict[str, Any]:
    """Medians over rounds per side; the ratio is the median of the per-round ratios."""
    sides: dict[str, dict[str, Any]] = {}
    for side in SIDES:
        names = rounds[0][side].keys()
        sides[side] = {name: median([r[side][name] for r in rounds]) for name in names}
        sides[side].update(paced[side])
    ratios = [r["bridge"]["tasks_per_s"] / r["direct"]["tasks_per_s"] for r in rounds]
    return {
        **sides,
        "ratio": median(ratios),
        "cpu_ratio": sides["bridge"]["cpu_s_per_1k"] / sides["direct"]["cpu_s_per_1k"],
        "paced_rate": rate,
        "rounds": list(rounds),
    }


def _target(name: str, value: float, limit: float, *, at_least: bool = False) -> dict[str, Any]:
    met = value >= limit if at_least else value <= limit
    return {
        "name": name,
        "value": value,
        "limit": limit,
        "pass": bool(met and not math.isnan(value)),
    }


def targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, judged at batch TARGET_BATCH where a batch size matters."""
    at = results["batches"][str(TARGET_BATCH)]
    idle, leases = results["idle_polls"], results["leases"]
    per_10k = 10_000 / max(leases["leases"], 1)
    return [
        _target(
            f"bridge / direct tasks/s at batch {TARGET_BATCH}", at["ratio"], 1.0, at_least=True
        ),
        _target("bridge CPU per task / direct's", at["cpu_ratio"], 1.5),
        _target("p99 resolve at half load (ms)", at["bridge"]["resolve"]["p99_ms"], 5.0),
        _target("p50 wake-up at half load (ms)", at["bridge"]["wakeup"]["p50_ms"], 5.0),
        _target(
            f"{idle['polls']} idle long-polls: CPU % of one core", idle["cpu_pct_of_one_core"], 5.0
        ),
        _target(f"{idle['polls']} idle long-polls: RSS (MiB)", idle["rss_mib"], 150 * MIB_PER_MB),
        _target(
            "RSS growth per 10,000 leases (MiB)", leases["delta_mib"] * per_10k, 50 * MIB_PER_MB
        ),
    ]


def _pair(side: Mapping[str, Any], figure: str) -> str:
    return f"{side[figure]['p50_ms']:.1f}/{side[figure]['p99_ms']:.1f}"


def _throughput_rows(batches: Mapping[str, Any]) -> list[str]:
    lines = [
        "queue drained, median of rounds   tasks/s            CPU s/1k tasks   "
        "nats-server s/1k  HTTP req/s",
        "batch                      direct  bridge  ratio   direct bridge ratio   direct bridge"
        "        sent",
    ]
    for batch, row in batches.items():
        d, b = row["direct"], row["bridge"]
        lines.append(
            f"{batch:>5}{d['tasks_per_s']:>27,.0f}{b['tasks_per_s']:>8,.0f}{row['ratio']:>7.2f}"
            f"{d['cpu_s_per_1k']:>9.2f}{b['cpu_s_per_1k']:>7.2f}{row['cpu_ratio']:>6.1f}"
            f"{d['nats_cpu_s_per_1k']:>9.2f}{b['nats_cpu_s_per_1k']:>7.2f}"
            f"{b['requests_per_s']:>12,.0f}"
        )
    return lines


def _latency_rows(batches: Mapping[str, Any]) -> list[str]:
    lines = [
        f"at {HALF_LOAD:.0%} of the bridge's max     resolve p50/p99 ms      "
        "wake-up p50/p99 ms   CPU s/1k tasks",
        "batch  tasks/s                 direct      bridge      direct      bridge   direct bridge",
    ]
    for batch, row in batches.items():
        d, b = row["direct"], row["bridge"]
        lines.append(
            f"{batch:>5}{row['paced_rate']:>9,.0f} {_pair(d, 'resolve'):>22} "
            f"{_pair(b, 'resolve'):>11} {_pair(d, 'wakeup'):>11} {_pair(b, 'wakeup'):>11}"
            f"{d['paced_cpu_s_per_1k']:>9.2f}{b['paced_cpu_s_per_1k']:>7.2f}"
        )
    return lines


def table(results: Mapping[str, Any]) -> str:
    config, ceiling = results["config"], results["generator_ceiling"]
    idle, leases = results["idle_polls"], results["leases"]
    per_process = ", ".join(f"{rss:.0f}" for rss in idle["rss_mib_per_process"])
    lines = [
        f"dagnats-bridge bench: {config['bridges']} bridge processes "
        f"({'a port each' if config['separate_ports'] else 'one port, --workers'}"
        f"{', batch resolves' if config['batch_resolve'] else ''}), "
        f"{config['fleet']} HTTP "
        f"workers, {config['rounds']} rounds x {config['tasks']} tasks, {results['cpus']} CPUs",
        f"bridge under test: {results['bridge']} (runtime dependencies only, as deployed)",
        f"load generator ceiling: {ceiling['requests_per_s']:,.0f} req/s against a trivial "
        f"Litestar endpoint (generator CPU {ceiling['generator_cpu_pct']:.0f} %)",
        "",
        *_throughput_rows(results["batches"]),
        "",
        *_latency_rows(results["batches"]),
        "",
        f"{idle['polls']} idle 30 s long-polls ({idle['connections']} connections): "
        f"{idle['cpu_pct_of_one_core']:.1f} % of one core, RSS {idle['rss_before_mib']:.0f} -> "
        f"{idle['rss_mib']:.0f} MiB ({per_process}), bridges together; PSS "
        f"{idle['pss_mib']:.0f} MiB (the pages they share counted once)",
        f"{leases['leases']:,} leases in flight ({leases['task_types']} task types): "
        f"RSS {leases['rss_before_mib']:.0f} -> {leases['rss_after_mib']:.0f} MiB "
        f"(+{leases['delta_mib']:.1f})",
        "",
    ]
    lines += [
        f"{'PASS' if t['pass'] else 'MISS'}  {t['name']}: {t['value']:.2f} "
        f"({'>=' if t['name'].startswith('bridge / direct') else '<='} {t['limit']:.4g})"
        for t in results["targets"]
    ]
    return "\n".join(lines)


def write_json(results: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2) + "\n")


def write_chart(results: Mapping[str, Any], path: Path) -> None:
    """Throughput by batch size, and latency at half load, bridge vs direct."""
    batches = list(results["batches"])
    rows = [results["batches"][b] for b in batches]
    positions = range(len(batches))
    # A bare Figure renders with Agg and needs no pyplot state or display.
    figure = Figure(figsize=(12, 4.5))
    throughput, latency = figure.subplots(1, 2)
    width = 0.38
    bars = {}
    for offset, side in ((-width / 2, "direct"), (width / 2, "bridge")):
        bars[side] = throughput.bar(
            [p + offset for p in positions],
            [r[side]["tasks_per_s"] for r in rows],
            width,
            label=side,
            color=COLORS[side],
        )
    throughput.bar_label(bars["bridge"], [f"x{r['ratio']:.2f}" for r in rows], fontsize="small")
    throughput.set(title="throughput (median of rounds)", xlabel="batch size", ylabel="tasks/s")
    throughput.set_xticks(list(positions), batches)
    throughput.legend()
    for side in SIDES:
        for figure_name, style in (("resolve", "-"), ("wakeup", "--")):
            for quantile, marker in (("p50_ms", "o"), ("p99_ms", "^")):
                latency.plot(
                    batches,
                    [r[side][figure_name][quantile] for r in rows],
                    color=COLORS[side],
                    linestyle=style,
                    marker=marker,
                    label=f"{side} {figure_name} {quantile[:3]}",
                )
    latency.axhline(5.0, color="grey", linewidth=0.8, linestyle=":")
    latency.set(
        title=f"latency at {HALF_LOAD:.0%} of the bridge's max load",
        xlabel="batch size",
        ylabel="ms",
        yscale="log",
    )
    latency.legend(fontsize="x-small", ncols=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
