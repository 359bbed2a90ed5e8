"""Debian's prometheus package in tests: promtool for the rules, the server for the scrape test. Tests that need
a binary skip, naming the package, when it is absent (.ci/install-system-packages installs it where it can)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "infra" / "prometheus"
RULES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
ALERTS_FILE = PROMETHEUS_DIR / "rules" / "alerts.yml"
RECORDING_FILE = PROMETHEUS_DIR / "rules" / "recording.yml"


def binary(name: str) -> str:
    """The binary's path, or skip the test saying how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package `prometheus`; see .ci/install-system-packages)")
    return path


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def load(path: Path) -> dict[str, Any]:
    with path.open() as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def rules(path: Path) -> list[dict[str, Any]]:
    """Every rule of a rules file, all groups together."""
    return [rule for group in load(path)["groups"] for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in rules(ALERTS_FILE)]


def recorded_names() -> set[str]:
    return {rule["record"] for path in RULES for rule in rules(path) if "record" in rule}


def scrape_config(router_url: str, node_url: str, token_file: Path, interval: str = "1s") -> dict[str, Any]:
    """A Prometheus config scraping one router (with the operator token) and one node, loading the project's
    rules, evaluated as often as it scrapes."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in RULES],
        "scrape_configs": [
            {
                "job_name": "fedai-router",
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "static_configs": [{"targets": [router_url.removeprefix("http://")]}],
            },
            {"job_name": "fedai-node", "static_configs": [{"targets": [node_url.removeprefix("http://")]}]},
        ],
    }


def prometheus_argv(config: Path, storage: Path, port: int) -> list[str]:
    return [
        binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
