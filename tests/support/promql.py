"""Every PromQL expression that ships: dashboard panels and recording rules.

Used by the static syntax check (tests/static/test_observability.py), and by the end-to-end
test that runs them against the Prometheus that scraped the running stack (each must return
data there).
"""

from __future__ import annotations

import json

import yaml

from tests.support.paths import REPO

OBSERVABILITY = REPO / "observability"
DASHBOARDS = OBSERVABILITY / "grafana" / "dashboards"
RULES = OBSERVABILITY / "rules"


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, expr) for every target of every panel of every dashboard."""
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                found.append((f"{path.name}: {panel['title']} [{target['refId']}]",
                              target["expr"]))
    return found


def recording_rule_expressions() -> list[tuple[str, str]]:
    """(where, expr) for every recording rule."""
    found = []
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    found.append((f"{path.name}: {rule['record']}", rule["expr"]))
    return found
