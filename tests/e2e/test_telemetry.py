"""Every PromQL expression that ships (dashboard panels and recording rules) returns data from
the local stack's Prometheus, which scraped the services and Envoy through the main job and
the other end-to-end tests. (pytest runs this module after test_api and test_main_job.)"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request

import pytest

from tests.e2e.conftest import Stack
from tests.static.promql import dashboard_expressions, recording_rule_expressions

pytestmark = pytest.mark.e2e

EXPRESSIONS = dashboard_expressions() + recording_rule_expressions()
#: Long enough for two scrapes (5 s apart) and a rule evaluation after the last test's calls.
WAIT_S = 60.0


def query(prometheus: str, expr: str) -> list[dict[str, object]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        reply = json.load(response)
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def has_a_number(result: list[dict[str, object]]) -> bool:
    return any(not math.isnan(float(sample["value"][1])) for sample in result)  # type: ignore[index]


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=[w for w, _ in EXPRESSIONS])
def test_the_expression_returns_data(stack: Stack, where: str, expr: str) -> None:
    prometheus = stack.endpoints["prometheus_ui"]
    deadline = time.monotonic() + WAIT_S
    while not has_a_number(result := query(prometheus, expr)):
        assert time.monotonic() < deadline, f"{where}: no data after {WAIT_S:.0f} s: {result}"
        time.sleep(2)


def test_every_scrape_target_is_up(stack: Stack) -> None:
    result = query(stack.endpoints["prometheus_ui"], "up")
    jobs = {sample["metric"]["job"]: sample["value"][1] for sample in result}  # type: ignore[index]
    assert jobs == dict.fromkeys(("prometheus", "ingest", "trainer", "recommender", "envoy"), "1")
