"""The local stack's supervisord configuration (scripts/localstack/supervisor.py) and the programs
scripts/localstack/up.py gives it; running it is tests/integration/test_components.py's."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from scripts.localstack.envoy import Envoy
from scripts.localstack.procfile import LocalPorts, local_stack
from scripts.localstack.supervisor import Program, config_text
from scripts.localstack.up import programs, service_env


def _parsed(text: str) -> configparser.RawConfigParser:
    config = configparser.RawConfigParser()
    config.read_string(text)
    return config


def test_every_program_is_restarted_and_stopped_as_a_whole_group(tmp_path: Path) -> None:
    stack = local_stack(tmp_path, LocalPorts())
    config = _parsed(config_text(stack, [Program("a", "exec sleep 1", priority=5,
                                                 stop_wait_s=30)]))
    program = config["program:a"]
    assert shlex.split(program["command"]) == ["/bin/bash", "-c", "exec sleep 1"]
    assert (program["autorestart"], program["stopasgroup"], program["killasgroup"]) == (
        "true", "true", "true")
    assert (program["priority"], program["stopwaitsecs"]) == ("5", "30")
    assert program["stdout_logfile"] == str(tmp_path / "logs" / "a.log")
    # Restarts are counted by the listener, in the state directory.
    assert config["eventlistener:restarts"]["events"] == "PROCESS_STATE"
    assert str(tmp_path / "restarts.json") in config["eventlistener:restarts"]["command"]


def test_a_percent_sign_reaches_the_program_as_written(tmp_path: Path) -> None:
    """supervisord expands %(name)s in values: a literal % must be doubled."""
    text = config_text(local_stack(tmp_path, LocalPorts()),
                       [Program("a", "printf '100%'", priority=5)])
    assert _parsed(text)["program:a"]["command"] == shlex.join(
        ["/bin/bash", "-c", "printf '100%%'"])


def test_two_replicas_start_after_the_components_and_before_envoy(tmp_path: Path) -> None:
    stack = local_stack(tmp_path, LocalPorts(), replicas=2)
    envoy = Envoy(tmp_path / "envoy", ingest="127.0.0.1:1", trainer="127.0.0.1:2",
                  recommender="127.0.0.1:3", port=8080, admin_port=9901)
    env = service_env(stack, replicas=2)
    started = sorted(programs(stack, envoy, env, replicas=2), key=lambda p: p.priority)
    assert [p.name for p in started] == [
        "seaweed", "tansu", "redis", "mlflow", "prometheus", "ingest", "ingest-2", "trainer",
        "recommender", "recommender-2", "envoy"]
    services = [p for p in started if p.name.split("-")[0] in ("ingest", "trainer",
                                                                "recommender")]
    assert {p.stop_wait_s for p in services} == {30}  # a pod's terminationGracePeriodSeconds
    assert "RECSYS_GRPC_PORT=50055" in services[-1].line  # the second recommender's port
    # Two replicas: a stopping one serves on until Envoy's health checks have seen it go.
    assert env["RECSYS_SHUTDOWN_DELAY_S"] == "3"
    assert "RECSYS_SHUTDOWN_DELAY_S" not in service_env(local_stack(tmp_path, LocalPorts()))
