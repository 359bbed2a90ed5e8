"""`python -m fedai_sim` (and `fedai simulate`): run a scenario in one or both modes, write
report.json, report.md and the PNG plots, print a short summary (or, with --json, the report)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedai_sim.engine import MODES, Mode, RunResult, simulate
from fedai_sim.plots import write_plots
from fedai_sim.report import document, markdown
from fedai_sim.scenario import ScenarioError, builtin, builtin_names, load_file

DEFAULT_OUT = Path(".fedai") / "sim"
DEFAULT_SCENARIO = "seed-failure"  # the case the simulator was built to show: seed-only load overfills nodes


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedai simulate",
        description="Simulate a fleet of nodes behind the router's real scheduler, in simulated time.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--scenario",
        metavar="NAME",
        help=f"a built-in scenario: {', '.join(builtin_names())} (default: {DEFAULT_SCENARIO})",
    )
    source.add_argument("--file", type=Path, metavar="PATH", help="a scenario TOML file")
    p.add_argument(
        "--mode",
        choices=[*MODES, "both"],
        default="both",
        help="router: live load (this router); seed: load learned at heartbeats only; both (default): compare",
    )
    p.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    p.add_argument("--out", type=Path, metavar="DIR", help=f"output directory (default {DEFAULT_OUT}/<scenario>)")
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the summary")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    p.add_argument("--csv", action="store_true", help="also write requests-<mode>.csv (one line per request)")
    p.add_argument("--list", action="store_true", help="list the built-in scenarios and exit")
    return p


CSV_COLUMNS = (
    "id",
    "arrival_s",
    "input_tokens",
    "output_tokens",
    "outcome",
    "node",
    "attempts",
    "latency_ms",
    "price_msat",
)


def write_csv(run: RunResult, path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for r in run.requests:
            latency = "" if r.latency_ms is None else f"{r.latency_ms:.1f}"
            price = "" if r.price_msat is None else r.price_msat
            arrival = f"{r.arrival:.4f}"
            writer.writerow(
                [r.id, arrival, r.input_tokens, r.output_tokens, r.outcome, r.node or "", r.attempts, latency, price]
            )


def summary_line(run: RunResult, totals: dict[str, object]) -> str:
    t = totals
    lat = t["latency_ms"]
    top = t["top_node"]
    load = t["max_load"]
    assert isinstance(lat, dict) and isinstance(top, dict) and isinstance(load, dict)
    p50 = "–" if lat["p50"] is None else f"{lat['p50'] / 1000:.2f}s"
    p95 = "–" if lat["p95"] is None else f"{lat['p95'] / 1000:.2f}s"
    return (
        f"  {run.mode:<6} success {t['success_rate']:.1%}, latency p50 {p50} p95 {p95}, "
        f"busiest {top['node']} {top['share']:.1%}, most loaded {load['node']} "
        f"{load['max_concurrent']}/{load['capacity']} ({load['ratio']:.2f}×), "
        f"{t['nodes_over_capacity']} node(s) over capacity  [{run.wall_s:.2f}s]"
    )


def _seconds(ms: float | None) -> str:
    return "–" if ms is None else f"{ms / 1000:.2f}s"


def comparison_line(router: dict[str, Any], seed: dict[str, Any]) -> str:
    """Both modes side by side on what differs: requests served, and nodes pushed over their capacity."""
    return (
        f"  router vs seed: success {router['success_rate']:.1%} vs {seed['success_rate']:.1%}, "
        f"latency p95 {_seconds(router['latency_ms']['p95'])} vs {_seconds(seed['latency_ms']['p95'])}, "
        f"most loaded node {router['max_load']['ratio']:.2f}× vs {seed['max_load']['ratio']:.2f}× its capacity, "
        f"{router['nodes_over_capacity']} vs {seed['nodes_over_capacity']} node(s) over capacity"
    )


def print_summary(doc: dict[str, Any], runs: list[RunResult], out: Path) -> None:
    s = doc["scenario"]
    print(
        f"{s['name']}: {s['nodes']:,} nodes (capacity {s['capacity']:,}), {s['requests']:,} requests, "
        f"seed {s['seed']} → {out}"
    )
    for run in runs:
        print(summary_line(run, doc["runs"][run.mode]["totals"]))
    if len(runs) == len(MODES):
        print(comparison_line(doc["runs"]["router"]["totals"], doc["runs"]["seed"]["totals"]))


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        for name in builtin_names():
            description = textwrap.shorten(builtin(name).description, 96, placeholder=" …")
            print(f"{name:<14} {description}")
        return 0
    try:
        scenario = load_file(args.file) if args.file is not None else builtin(args.scenario or DEFAULT_SCENARIO)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    modes: tuple[Mode, ...] = MODES if args.mode == "both" else (args.mode,)
    runs = [simulate(scenario, mode, args.seed) for mode in modes]
    doc = document(runs)
    out: Path = args.out or DEFAULT_OUT / scenario.name
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        plots = [] if args.no_plots else write_plots(runs, out)
        (out / "report.md").write_text(markdown(doc, [p.name for p in plots]))
        if args.csv:
            for run in runs:
                write_csv(run, out / f"requests-{run.mode}.csv")
    except OSError as exc:
        print(f"error: cannot write the report to {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    print_summary(doc, runs, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
