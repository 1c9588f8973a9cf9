"""The README's first command, as a user sees it: the main job's output and the tools it names."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from scripts.localstack.components import VENV_BIN
from services.core.names import SERVICE_NAMES
from tests.support.local_stack import Stack

pytestmark = pytest.mark.e2e

def test_the_main_job_shows_recommendations_three_ways(stack: Stack) -> None:
    output = stack.output()
    trained = re.search(r"model version (\d+): promoted to champion", output)
    assert trained, output[-3000:]
    version = trained.group(1)
    # 1. the Python stub, for each shown user
    stub_lines = re.findall(rf"model {version}, STRATEGY_PERSONALIZED: (.+)", output)
    assert len(stub_lines) == 3
    assert all(len(line.split(", ")) == 5 for line in stub_lines)
    # 2. grpcurl, and 3. curl through Envoy: the same answer for the same user
    grpcurl = json.loads(re.search(r"Recommend\n(\{\n.*?\n\})\n", output, re.S).group(1))
    curl = json.loads(re.search(r'^(\{"items".*\})$', output, re.M).group(1))
    assert curl["modelVersion"] == grpcurl["model_version"] == version
    assert [i["itemId"] for i in curl["items"]] == [i["item_id"] for i in grpcurl["items"]]
    assert len(curl["items"]) == 5


def test_the_endpoints_are_printed(stack: Stack) -> None:
    output = stack.output()
    for name in ("ingest_grpc", "trainer_grpc", "recommender_grpc", "rest_base_url",
                 "mlflow_ui", "prometheus_ui"):
        assert re.search(rf"^  {name} +{re.escape(stack.endpoints[name])}$", output, re.M), name


def grpcurl(stack: Stack, *args: str) -> str:
    """grpcurl with the admin's client certificate (the services speak mutual TLS)."""
    security = stack.security
    tls = ["-cacert", security["ca_file"], "-cert", security["client_cert_file"],
           "-key", security["client_key_file"]]
    result = subprocess.run([str(VENV_BIN / "grpcurl"), *tls, *args],
                            check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("name", list(SERVICE_NAMES))
def test_grpcurl_lists_and_describes_each_service(stack: Stack, name: str) -> None:
    target = stack.endpoints[f"{name}_grpc"]
    listed = grpcurl(stack, target, "list").split()
    own = SERVICE_NAMES[name]
    assert {own, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= set(listed)
    described = grpcurl(stack, target, "describe", own)
    assert f"service {own.rsplit('.', 1)[1]} {{" in described
    assert described.count("rpc ") >= 3


def test_grpcurl_calls_recommend(stack: Stack) -> None:
    reply = json.loads(grpcurl(stack, "-d", '{"user_id": "u5", "k": 3}', stack.endpoints[
        "recommender_grpc"], f"{SERVICE_NAMES['recommender']}/Recommend"))
    assert len(reply["items"]) == 3
    assert reply["strategy"] == "STRATEGY_PERSONALIZED"
