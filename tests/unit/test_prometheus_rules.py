"""The Prometheus rules in infra/prometheus: promtool accepts them and their unit tests pass; every alert has a
firing case, a quiet case and stays silent on the idle network; every `and` or `unless` condition in an alert is
needed (a test fails without it); and the rules read only series the code defines."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.metric_names import series_names
from tests.support.prometheus import (
    ALERTS_FILE,
    PROMETHEUS_DIR,
    RULE_TESTS,
    RULES,
    alert_names,
    load,
    promtool,
    recorded_names,
    rules,
)

IDLE = PROMETHEUS_DIR / "tests" / "idle.yml"
GUARD = re.compile(r"\s(?:and|unless)\s")  # the condition after the first of these is an alert's guard
METRIC = re.compile(r"\bfedai_[a-z0-9_]+")
RECORDED = re.compile(r"\bfedai:[a-z0-9_:]+")


def test_promtool_accepts_the_config_and_the_rules() -> None:
    config = promtool("check", "config", "--syntax-only", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    checked = promtool("check", "rules", *(str(p) for p in RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("SUCCESS") == len(RULES)


def test_promtool_unit_tests_pass() -> None:
    tested = promtool("test", "rules", *(str(p.relative_to(PROMETHEUS_DIR)) for p in RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.count("SUCCESS") == len(RULE_TESTS) >= 4


def _cases() -> dict[Path, list[dict[str, Any]]]:
    return {
        path: [check for test in load(path)["tests"] for check in test.get("alert_rule_test", [])]
        for path in RULE_TESTS
    }


def test_every_alert_fires_in_one_case_stays_quiet_in_another_and_is_silent_when_idle() -> None:
    cases = _cases()
    idle = {c["alertname"] for c in cases.pop(IDLE) if c["exp_alerts"] == []}
    checks = [check for found in cases.values() for check in found]
    for name in alert_names():
        fired = [c for c in checks if c["alertname"] == name and c["exp_alerts"]]
        quiet = [c for c in checks if c["alertname"] == name and not c["exp_alerts"]]
        assert fired, f"{name} has no test where it fires"
        assert quiet, f"{name} has no test where it stays quiet"
        assert name in idle, f"{name} is not checked silent in {IDLE.name}"


def test_rules_read_only_series_the_code_defines() -> None:
    defined, recorded = series_names(), recorded_names()
    for path in RULES:
        for rule in rules(path):
            expr = rule["expr"]
            unknown = set(METRIC.findall(expr)) - defined
            assert not unknown, f"{rule.get('alert') or rule.get('record')} reads series no code defines: {unknown}"
            missing = set(RECORDED.findall(expr)) - recorded
            assert not missing, f"{rule.get('alert') or rule.get('record')} reads unrecorded series: {missing}"


def _without_guard(copy: Path, alert: str) -> None:
    """Rewrite the copied alerts file with `alert`'s expression cut at its first `and` or `unless`."""
    data = load(ALERTS_FILE)
    for group in data["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                rule["expr"] = GUARD.split(rule["expr"], maxsplit=1)[0]
    (copy / "rules" / ALERTS_FILE.name).write_text(yaml.safe_dump(data, sort_keys=False))


GUARDED = [rule["alert"] for rule in rules(ALERTS_FILE) if GUARD.search(rule["expr"])]


@pytest.mark.parametrize("alert", GUARDED)
def test_each_alert_condition_after_and_is_needed(alert: str, tmp_path: Path) -> None:
    copy = tmp_path / "prometheus"
    shutil.copytree(PROMETHEUS_DIR, copy)
    _without_guard(copy, alert)
    tested = promtool("test", "rules", *(p.name for p in RULE_TESTS), cwd=copy / "tests")
    assert tested.returncode != 0, f"no test fails when {alert} loses its `and`/`unless` condition"
    assert f"alertname: {alert}," in tested.stdout + tested.stderr
