"""What a run comes to: a JSON summary (per node, totals, price bands) and a Markdown report. Deterministic:
the same scenario and seed give the same document (wall-clock time is left out)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from fedai_sim.engine import RunResult
from fedai_sim.fleet import Request

PRICE_BANDS = 5
TOP_NODES_IN_MARKDOWN = 12
PLOTS = ("load.png", "latency.png", "revenue.png", "price-bands.png")

Band = tuple[float, float]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100) of `values`; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def unit_price(request: Request) -> float:
    """What the client paid per 1,000 tokens (input + output), in msat."""
    assert request.price_msat is not None
    return request.price_msat * 1000 / (request.input_tokens + request.output_tokens)


def price_bands(runs: Sequence[RunResult], count: int = PRICE_BANDS) -> list[Band]:
    """`count` equal-width bands over the unit prices paid in all runs (shared, so runs compare band by band)."""
    paid = [unit_price(r) for run in runs for r in run.requests if r.outcome == "ok"]
    if not paid:
        return []
    low, high = math.floor(min(paid)), math.ceil(max(paid))
    if high == low:
        return [(low, high)]
    width = (high - low) / count
    return [(low + i * width, low + (i + 1) * width) for i in range(count)]


def band_label(band: Band) -> str:
    return f"{band[0]:,.0f}–{band[1]:,.0f}"


def band_of(value: float, bands: Sequence[Band]) -> int:
    for i, (_, high) in enumerate(bands):
        if value <= high:
            return i
    return len(bands) - 1


def summarize(run: RunResult, bands: Sequence[Band]) -> dict[str, Any]:
    """One run: totals, price bands and every node."""
    requests = run.requests
    served = [r for r in requests if r.outcome == "ok"]
    latencies = [r.latency_ms for r in served if r.latency_ms is not None]
    prices = [r.price_msat for r in served if r.price_msat is not None]
    attempts = sum(r.attempts for r in requests)
    nodes = run.nodes
    worst = max(nodes, key=lambda n: (n.max_sent / n.capacity, n.received))
    busiest = max(nodes, key=lambda n: n.served)
    per_band = Counter(band_of(unit_price(r), bands) for r in served)
    totals = {
        "requests": len(requests),
        "served": len(served),
        "failed": len(requests) - len(served),
        "success_rate": _r(len(served) / len(requests) if requests else 0.0, 4),
        "failures": dict(sorted(Counter(r.outcome for r in requests if r.outcome != "ok").items())),
        "attempts": attempts,
        "retries": attempts - sum(1 for r in requests if r.attempts > 0),
        "retries_denied_by_budget": run.retries_denied,
        "latency_ms": {
            "p50": _r(percentile(latencies, 50), 1),
            "p95": _r(percentile(latencies, 95), 1),
            "p99": _r(percentile(latencies, 99), 1),
            "max": _r(max(latencies, default=None), 1),
        },
        "mean_price_msat": _r(sum(prices) / len(prices) if prices else None, 2),
        "revenue_msat": sum(prices),
        "nodes_used": sum(1 for n in nodes if n.served),
        "top_node": {"node": busiest.name, "share": _r(busiest.served / len(served) if served else 0.0, 4)},
        "max_load": {
            "node": worst.name,
            "max_concurrent": worst.max_sent,
            "capacity": worst.capacity,
            "ratio": _r(worst.max_sent / worst.capacity, 3),
        },
        "nodes_over_capacity": sum(1 for n in nodes if n.max_sent > n.capacity),
        "nodes_holding_over_capacity": sum(1 for n in nodes if n.max_held > n.capacity),
        "simulated_s": _r(run.end_s, 3),
    }
    return {
        "mode": run.mode,
        "totals": totals,
        "price_bands": [
            {
                "msat_per_1k_tokens": [_r(b[0], 1), _r(b[1], 1)],
                "requests": per_band.get(i, 0),
                "share": _r(per_band.get(i, 0) / len(served) if served else 0.0, 4),
            }
            for i, b in enumerate(bands)
        ],
        "operators": _operators(run),
        "nodes": [
            {
                "node": n.name,
                "operator": n.operator,
                "pubkey": n.pubkey[:16],
                "capacity": n.capacity,
                "max_concurrent": n.max_sent,
                "max_held": n.max_held,
                "received": n.received,
                "served": n.served,
                "failed": n.failed,
                "rejected": n.rejected,
                "share": _r(n.served / len(served) if served else 0.0, 4),
                "revenue_msat": n.revenue_msat,
                "service_p50_ms": _r(percentile(n.service_ms, 50), 1),
            }
            for n in nodes
        ],
    }


def _operators(run: RunResult) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for n in run.nodes:
        entry = out.setdefault(n.operator, {"nodes": 0, "capacity": 0, "served": 0, "revenue_msat": 0})
        entry["nodes"] += 1
        entry["capacity"] += n.capacity
        entry["served"] += n.served
        entry["revenue_msat"] += n.revenue_msat
    return out


def document(runs: Sequence[RunResult]) -> dict[str, Any]:
    """The whole report.json: the scenario in brief and one summary per mode."""
    first = runs[0]
    s = first.scenario
    bands = price_bands(runs)
    return {
        "scenario": {
            "name": s.name,
            "description": s.description.strip(),
            "seed": first.seed,
            "nodes": len(first.nodes),
            "capacity": sum(n.capacity for n in first.nodes),
            "requests": len(first.requests),
            "heartbeat_interval_s": s.heartbeat_interval_s,
            "overload": s.overload,
            "events": len(s.events),
        },
        "runs": {run.mode: summarize(run, bands) for run in runs},
    }


def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _comparison_rows(runs: dict[str, Any]) -> list[tuple[str, list[str]]]:
    def row(label: str, fn: Any) -> tuple[str, list[str]]:
        return label, [fn(r["totals"]) for r in runs.values()]

    return [
        row("success rate", lambda t: f"{t['success_rate']:.1%}"),
        row(
            "latency p50 / p95 / p99", lambda t: " / ".join(_fmt_ms(t["latency_ms"][q]) for q in ("p50", "p95", "p99"))
        ),
        row("mean price", lambda t: "–" if t["mean_price_msat"] is None else f"{t['mean_price_msat']:,.0f} msat"),
        row("busiest node's share of requests", lambda t: f"{t['top_node']['share']:.1%} ({t['top_node']['node']})"),
        row(
            "most loaded node: requests sent at once / capacity",
            lambda t: (
                f"{t['max_load']['max_concurrent']} / {t['max_load']['capacity']} "
                f"({t['max_load']['ratio']:.2f}×, {t['max_load']['node']})"
            ),
        ),
        row("nodes sent more than their capacity", lambda t: str(t["nodes_over_capacity"])),
        row("nodes holding more than their capacity¹", lambda t: str(t["nodes_holding_over_capacity"])),
        row("nodes that served requests", lambda t: str(t["nodes_used"])),
        row("retries (denied by budget)", lambda t: f"{t['retries']} ({t['retries_denied_by_budget']})"),
        row("failures", lambda t: ", ".join(f"{k} {v}" for k, v in t["failures"].items()) or "none"),
    ]


def _flag(value: int, capacity: int) -> str:
    """A concurrency figure, in bold when it is above the node's capacity."""
    return f"**{value}**" if value > capacity else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def markdown(doc: dict[str, Any], plots: Sequence[str] = PLOTS) -> str:
    s, runs = doc["scenario"], doc["runs"]
    out = [f"# Simulation: {s['name']}", ""]
    if s["description"]:
        out += [s["description"], ""]
    out += [
        f"Seed {s['seed']} · {s['nodes']:,} nodes (total capacity {s['capacity']:,}) · {s['requests']:,} requests · "
        f"heartbeat every {s['heartbeat_interval_s']:g} s · a full node answers: {s['overload']} · "
        f"{s['events']} scheduled event(s).",
        "",
        "## Results" if len(runs) == 1 else "## " + " vs ".join(f"`{m}`" for m in runs) + " mode",
        "",
    ]
    out += _table(["", *(f"`{m}` mode" for m in runs)], [[label, *cells] for label, cells in _comparison_rows(runs)])
    out += ["", "¹ counting requests the node queued and calls the router had already given up on (timeouts)."]
    for mode, run in runs.items():
        ranked = sorted(run["nodes"], key=lambda n: (-n["served"], n["node"]))[:TOP_NODES_IN_MARKDOWN]
        out += ["", f"## `{mode}` mode: busiest nodes", ""]
        out += _table(
            [
                "node",
                "operator",
                "capacity",
                "max sent",
                "max held¹",
                "share",
                "served",
                "failed (429)",
                "revenue msat",
            ],
            [
                [
                    n["node"],
                    n["operator"],
                    n["capacity"],
                    _flag(n["max_concurrent"], n["capacity"]),
                    _flag(n["max_held"], n["capacity"]),
                    f"{n['share']:.1%}",
                    n["served"],
                    f"{n['failed']} ({n['rejected']})",
                    f"{n['revenue_msat']:,}",
                ]
                for n in ranked
            ],
        )
        if len(run["nodes"]) > TOP_NODES_IN_MARKDOWN:
            out.append(f"\n{len(run['nodes']) - TOP_NODES_IN_MARKDOWN:,} more nodes in report.json.")
    out += ["", "## Share of requests per price band (msat per 1,000 tokens paid)", ""]
    bands = next(iter(runs.values()))["price_bands"]
    out += _table(
        ["band", *(f"`{m}`" for m in runs)],
        [
            [
                band_label(tuple(b["msat_per_1k_tokens"])),
                *(f"{r['price_bands'][i]['share']:.1%}" for r in runs.values()),
            ]
            for i, b in enumerate(bands)
        ],
    )
    if plots:
        out += ["", "## Plots", ""]
        out += [f"![{name[:-4]}]({name})" for name in plots]
    return "\n".join(out) + "\n"
