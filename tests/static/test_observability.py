"""Prometheus configuration and rules (promtool), alert unit tests, and the Grafana
dashboards: valid PromQL, the provisioned datasource, and all of them shipped to Kubernetes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.support.promql import (
    DASHBOARDS,
    OBSERVABILITY,
    RULES,
    dashboard_expressions,
    recording_rule_expressions,
)
from tests.support.tools import check, find_tool

PROMTOOL = "promtool, from the Debian package prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    return find_tool("promtool", PROMTOOL)


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-k8s.yml"])
def test_prometheus_config_is_valid(promtool: str, config: str) -> None:
    check([promtool, "check", "config", str(OBSERVABILITY / config)])


def test_rule_files_are_valid(promtool: str) -> None:
    check([promtool, "check", "rules", *map(str, sorted(RULES.glob("*.yml")))])


def test_rule_unit_tests_pass(promtool: str) -> None:
    check([promtool, "test", "rules", *map(str, sorted((RULES / "tests").glob("*.yml")))])


def test_every_alert_has_a_unit_test() -> None:
    alerts = {rule["alert"] for path in RULES.glob("*.yml")
              for group in yaml.safe_load(path.read_text())["groups"]
              for rule in group["rules"] if "alert" in rule}
    tested = {case["alertname"] for path in (RULES / "tests").glob("*.yml")
              for test in yaml.safe_load(path.read_text())["tests"]
              for case in test.get("alert_rule_test", [])
              if case.get("exp_alerts")}
    assert alerts, "no alerts found"
    assert alerts <= tested, f"alerts never shown to fire in a test: {sorted(alerts - tested)}"


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool parses each expression as the expression of a recording rule.
    expressions = dashboard_expressions()
    assert expressions
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(expressions)
    ]}]}
    path = tmp_path / "dashboards.yml"
    path.write_text(yaml.safe_dump(rules))
    check([promtool, "check", "rules", str(path)])


def test_queries_use_no_grafana_variables() -> None:
    # They must run unchanged against Prometheus' API, as the tests of the running stack do.
    for where, expr in dashboard_expressions() + recording_rule_expressions():
        assert "$" not in expr, f"{where}: {expr}"


def test_dashboards_use_the_provisioned_datasource() -> None:
    provisioning = OBSERVABILITY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    uids = {d["uid"] for d in datasources["datasources"]}
    seen_uids = set()
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] not in seen_uids, f"{path.name}: duplicate uid"
        seen_uids.add(dashboard["uid"])
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] in uids, f"{path.name}: {panel['title']}"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in uids, f"{path.name}: {panel['title']}"


def test_kubernetes_gets_every_dashboard_and_rule_file() -> None:
    kustomization = yaml.safe_load((OBSERVABILITY / "kustomization.yaml").read_text())
    generated = {f.split("=")[-1] for g in kustomization["configMapGenerator"] for f in g["files"]}
    shipped = {str(p.relative_to(OBSERVABILITY)) for p in DASHBOARDS.glob("*.json")}
    shipped |= {str(p.relative_to(OBSERVABILITY)) for p in RULES.glob("*.yml")}
    assert shipped <= generated, f"not in observability/kustomization.yaml: {shipped - generated}"
    assert all((OBSERVABILITY / f).is_file() for f in generated)


def test_local_and_kubernetes_prometheus_scrape_the_same_jobs() -> None:
    # Rules and dashboards rely on the job names being the same in both.
    def jobs(name: str) -> set[str]:
        config = yaml.safe_load((OBSERVABILITY / name).read_text())
        return {job["job_name"] for job in config["scrape_configs"]}

    assert {"ingest", "trainer", "recommender"} <= jobs("prometheus.yml") <= jobs(
        "prometheus-k8s.yml")

