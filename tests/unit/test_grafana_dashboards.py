"""The provisioned Grafana dashboards (infra/grafana): valid JSON, unique uids and panel ids, every panel on the
provisioned datasource, and every query reading only series the code's registries define or the rules record;
every alert's `dashboard` annotation names a panel that exists."""

from __future__ import annotations

import re

from tests.support.grafana import DASHBOARDS, GRAFANA, all_panels, dashboard, queries
from tests.support.metric_names import series_names
from tests.support.prometheus import ALERTS_FILE, load, recorded_names, rules

METRIC = re.compile(r"\bfedai_[a-z0-9_]+")
RECORDED = re.compile(r"\bfedai:[a-z0-9_:]+")


def datasource_uid() -> str:
    sources = load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    [prometheus] = [s for s in sources if s["type"] == "prometheus"]
    uid: str = prometheus["uid"]
    return uid


def test_dashboards_are_provisioned_from_their_directory() -> None:
    assert DASHBOARDS, "no dashboard in infra/grafana/dashboards"
    [provider] = load(GRAFANA / "provisioning" / "dashboards" / "fedai.yml")["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    uids = [dashboard(path)["uid"] for path in DASHBOARDS]
    assert len(set(uids)) == len(uids), f"dashboard uids repeat: {uids}"


def test_panels_have_unique_ids_a_place_and_the_provisioned_datasource() -> None:
    uid = datasource_uid()
    for path in DASHBOARDS:
        panels = all_panels(dashboard(path)["panels"])
        ids = [p["id"] for p in panels]
        assert len(set(ids)) == len(ids), f"{path.name}: panel ids repeat: {ids}"
        for panel in panels:
            assert panel["title"] and {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel
            assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, f"{panel['title']} leaves the grid"
            if panel["type"] not in ("row", "text"):
                assert panel["datasource"]["uid"] == uid, panel["title"]
                assert panel["targets"], f"{panel['title']} has no query"
                assert all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]


def test_every_query_reads_series_the_code_defines_or_the_rules_record() -> None:
    defined, recorded = series_names(), recorded_names()
    assert queries()
    for title, expr in queries():
        metrics, records = set(METRIC.findall(expr)), set(RECORDED.findall(expr))
        assert metrics or records, f"{title}: {expr!r} reads no fedai series"
        assert metrics <= defined, f"{title} reads series no code defines: {metrics - defined}"
        assert records <= recorded, f"{title} reads unrecorded series: {records - recorded}"


def test_every_alert_names_a_panel_that_exists() -> None:
    titles = {
        f"{dashboard(path)['title']} / {panel['title']}"
        for path in DASHBOARDS
        for panel in all_panels(dashboard(path)["panels"])
    }
    for rule in rules(ALERTS_FILE):
        assert rule["annotations"]["dashboard"] in titles, f"{rule['alert']} names a panel that does not exist"
