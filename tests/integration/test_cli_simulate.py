"""`fedai simulate` as a real process: it runs `python -m fedai_sim`, writes the report and the
plots, and passes exit statuses and messages through."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FEDAI = [sys.executable, "-m", "fedai.cli.main", "simulate"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FEDAI, *args], capture_output=True, text=True, timeout=120, check=False)


def test_simulate_steady_writes_the_report_and_the_plots(tmp_path: Path) -> None:
    out = tmp_path / "steady"
    proc = run("--scenario", "steady", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc == json.loads((out / "report.json").read_text())
    router = doc["runs"]["router"]
    assert doc["scenario"]["name"] == "steady" and router["totals"]["requests"] > 0
    assert router["totals"]["nodes_over_capacity"] == 0
    report = (out / "report.md").read_text()
    assert report.startswith("# Simulation: steady")
    for name in ("load.png", "latency.png", "revenue.png", "price-bands.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert f"]({name})" in report


def test_simulate_both_modes_prints_a_summary(tmp_path: Path) -> None:
    proc = run("--scenario", "seed-failure", "--mode", "both", "--out", str(tmp_path), "--no-plots")
    assert proc.returncode == 0, proc.stderr
    assert "router" in proc.stdout and "seed" in proc.stdout and "cheap 200/18" in proc.stdout
    assert not list(tmp_path.glob("*.png"))


def test_no_arguments_run_the_seed_failure_case_and_compare_the_modes(tmp_path: Path) -> None:
    proc = run("--out", str(tmp_path), "--no-plots")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("seed-failure: ")
    assert [line.split()[0] for line in lines[1:3]] == ["router", "seed"]
    compare = lines[3]
    assert compare.startswith("  router vs seed: success ") and " vs 1 node(s) over capacity" in compare
    assert set(json.loads((tmp_path / "report.json").read_text())["runs"]) == {"router", "seed"}


def test_a_bad_scenario_name_exits_non_zero_with_a_clear_message(tmp_path: Path) -> None:
    proc = run("--scenario", "nope", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "error: unknown scenario 'nope' (built-in: failures, large, price-war, seed-failure, steady)" in proc.stderr
    assert not (tmp_path / "report.json").exists()


def test_a_bad_scenario_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\n[[arrivals]]\nrate_per_s = -1.0\nduration_s = 5.0\n[[nodes]]\nname = "a"\n')
    proc = run("--file", str(path), "--out", str(tmp_path))
    assert proc.returncode == 2
    assert f"error: {path}: arrivals[0].rate_per_s: Expected `float` > 0.0" in proc.stderr


def test_help_comes_from_the_simulator() -> None:
    proc = run("--help")
    assert proc.returncode == 0
    assert "--scenario NAME" in proc.stdout and "--mode {router,seed,both}" in proc.stdout
