"""PNG plots of one or more runs of a scenario (one panel or one series per mode). matplotlib is imported
here only, with the Agg backend: the router itself never needs it (`pip install 'fedai[sim]'`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedai_sim.engine import RunResult
from fedai_sim.report import band_label, band_of, percentile, price_bands, unit_price

LOAD_LINES = 6  # nodes drawn in the load plot
COLOURS = {"router": "#1f77b4", "seed": "#d62728"}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("plots need matplotlib: pip install 'fedai[sim]' (or pass --no-plots)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(runs: Sequence[RunResult], out: Path) -> list[Path]:
    """load.png, latency.png, revenue.png and price-bands.png in `out`; returns their paths."""
    plt = _pyplot()
    figures = {
        "load.png": load_figure(plt, runs),
        "latency.png": latency_figure(plt, runs),
        "revenue.png": revenue_figure(plt, runs),
        "price-bands.png": bands_figure(plt, runs),
    }
    paths = []
    for name, fig in figures.items():
        path = out / name
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


def _watched(runs: Sequence[RunResult]) -> list[str]:
    """The nodes worth drawing: the most loaded (against capacity) in any run, then the busiest."""
    score: dict[str, float] = {}
    for run in runs:
        for n in run.nodes:
            score[n.name] = max(score.get(n.name, 0.0), max(n.max_sent, n.max_held) / n.capacity + n.served / 1e9)
    return sorted(score, key=lambda name: (-score[name], name))[:LOAD_LINES]


def load_figure(plt: Any, runs: Sequence[RunResult]) -> Any:
    watched = _watched(runs)
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        by_name = {n.name: n for n in run.nodes}
        for i, name in enumerate(watched):
            node = by_name[name]
            colour = f"C{i}"
            times = [t for t, _ in node.load] + [run.end_s]
            values = [v for _, v in node.load] + [node.load[-1][1]]
            ax.step(times, values, where="post", color=colour, linewidth=1.2, label=f"{name} (cap {node.capacity})")
            ax.axhline(node.capacity, color=colour, linestyle="--", linewidth=0.8, alpha=0.7)
        ax.set_title(f"{run.mode} mode: requests at each node (dashed: capacity)")
        ax.locator_params(axis="y", integer=True)
        ax.set_xlabel("simulated time (s)")
        ax.grid(alpha=0.3)
    for ax in axes[0]:
        ax.set_ylabel("concurrent requests")
    axes[0][-1].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return fig


def latency_figure(plt: Any, runs: Sequence[RunResult]) -> Any:
    fig, ax = plt.subplots(figsize=(7, 4))
    seconds = {
        run.mode: [r.latency_ms / 1000 for r in run.requests if r.outcome == "ok" and r.latency_ms is not None]
        for run in runs
    }
    top = max((max(v) for v in seconds.values() if v), default=1.0)
    bins = [top * i / 60 for i in range(61)]  # the same bins for every mode
    for mode, values in seconds.items():
        if values:
            p50, p95 = percentile(values, 50), percentile(values, 95)
            ax.hist(
                values,
                bins=bins,
                histtype="step",
                linewidth=1.5,
                color=COLOURS.get(mode),
                label=f"{mode}: p50 {p50:.2f} s, p95 {p95:.2f} s",
            )
    ax.set_title("end-to-end latency of served requests (failovers included)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _grouped_bars(ax: Any, labels: Sequence[str], series: Mapping[str, list[float]]) -> None:
    width = 0.8 / max(1, len(series))
    for i, (mode, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(labels))]
        ax.bar(xs, values, width=width, label=mode, color=COLOURS.get(mode))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)


def revenue_figure(plt: Any, runs: Sequence[RunResult]) -> Any:
    operators = sorted({n.operator for n in runs[0].nodes})
    series: dict[str, list[float]] = {}
    for run in runs:
        revenue = dict.fromkeys(operators, 0)
        for n in run.nodes:
            revenue[n.operator] += n.revenue_msat
        series[run.mode] = [revenue[o] / 1000 for o in operators]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(operators) + 3), 4))
    _grouped_bars(ax, operators, series)
    ax.set_title("revenue per operator")
    ax.set_ylabel("sat")
    fig.tight_layout()
    return fig


def bands_figure(plt: Any, runs: Sequence[RunResult]) -> Any:
    bands = price_bands(runs)
    series: dict[str, list[float]] = {}
    for run in runs:
        paid = [unit_price(r) for r in run.requests if r.outcome == "ok"]
        counts = [0] * len(bands)
        for value in paid:
            counts[band_of(value, bands)] += 1
        series[run.mode] = [100 * c / max(1, len(paid)) for c in counts]
    fig, ax = plt.subplots(figsize=(7, 4))
    _grouped_bars(ax, [band_label(b) for b in bands], series)
    ax.set_title("share of requests per price band")
    ax.set_xlabel("msat paid per 1,000 tokens")
    ax.set_ylabel("% of served requests")
    fig.tight_layout()
    return fig
