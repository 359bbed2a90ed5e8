"""The provisioned Grafana dashboards of infra/grafana, read as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.prometheus import ROOT

GRAFANA = ROOT / "infra" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def dashboard(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    assert isinstance(data, dict), path
    return data


def all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Panels, with those nested in collapsed rows."""
    return [p for panel in panels for p in [panel, *all_panels(panel.get("panels", []))]]


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) of every query of every dashboard."""
    return [
        (panel["title"], target["expr"])
        for path in DASHBOARDS
        for panel in all_panels(dashboard(path)["panels"])
        for target in panel.get("targets", [])
    ]
