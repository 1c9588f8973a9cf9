"""Every PromQL expression that ships (dashboard panels and recording rules) returns data from
the local stack's Prometheus, which scraped the services and Envoy through the main job, the
other end-to-end tests and this module's own calls (rates look 5 minutes back, and the tests
before this module may have ended longer ago than that on a slow machine)."""

from __future__ import annotations

import json
import math
import urllib.parse
import urllib.request
from collections.abc import Callable

import pytest

from tests.support.clients import Rest
from tests.support.local_stack import Stack
from tests.support.polling import eventually
from tests.support.promql import dashboard_expressions, recording_rule_expressions

pytestmark = pytest.mark.e2e

EXPRESSIONS = dashboard_expressions() + recording_rule_expressions()
#: Long enough for two scrapes (5 s apart) and a rule evaluation after the last test's calls.
WAIT_S = 60.0


@pytest.fixture(scope="module")
def traffic(rest: Rest) -> Callable[[], None]:
    """Calls to every RPC family through the edge. A rate needs the counter to rise between
    two scrapes in its window, so the tests call this again while they wait."""
    return lambda: _call_everything(rest)


def _call_everything(rest: Rest) -> None:
    for user in ("u1", "u2", "u3", "nobody-knows-me"):
        assert rest.get(f"/v1/users/{user}/recommendations?k=5").status == 200
    for path in ("/v1/items/i1/similar", "/v1/model", "/v1/modelVersions", "/v1/trainingJobs"):
        assert rest.get(path).status == 200
    assert rest.post("/v1/interactions", {
        "userId": "telemetry", "itemId": "i1", "type": "INTERACTION_TYPE_CLICK",
        "occurredAt": "2024-05-01T12:00:00Z"}).status == 200


def query(prometheus: str, expr: str) -> list[dict[str, object]]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        reply = json.load(response)
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def has_a_number(result: list[dict[str, object]]) -> bool:
    return any(not math.isnan(float(sample["value"][1])) for sample in result)  # type: ignore[index]


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=[w for w, _ in EXPRESSIONS])
def test_the_expression_returns_data(stack: Stack, traffic: Callable[[], None], where: str,
                                     expr: str) -> None:
    prometheus = stack.endpoints["prometheus_ui"]

    def has_data() -> bool:
        if has_a_number(query(prometheus, expr)):
            return True
        traffic()  # a rate needs the counter to rise again between two scrapes
        return False

    eventually(has_data, timeout=WAIT_S, what=f"{where}: data for {expr}", interval=2)


def test_every_scrape_target_is_up(stack: Stack) -> None:
    result = query(stack.endpoints["prometheus_ui"], "up")
    jobs = {sample["metric"]["job"]: sample["value"][1] for sample in result}  # type: ignore[index]
    assert jobs == dict.fromkeys(("prometheus", "ingest", "trainer", "recommender", "envoy"), "1")
