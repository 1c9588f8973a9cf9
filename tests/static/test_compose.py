"""docker-compose.yml: valid against the Compose specification's JSON schema (no Docker
engine runs here), every file it mounts exists, and it builds from scripts/images' contexts."""

from __future__ import annotations

import yaml

from scripts.images.context import CONTEXTS
from tests.support.paths import REPO
from tests.support.tools import check, find_tool

COMPOSE = REPO / "docker-compose.yml"


def test_compose_file_matches_the_compose_spec() -> None:
    validator = find_tool("check-jsonschema",
                          "PyPI check-jsonschema, which vendors the Compose spec schema")
    check([validator, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])


def test_compose_mounts_and_builds_existing_files() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./.local/"):  # generated: the local PKI (scripts.localstack.pki)
                continue
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source}"
        if "build" in service:
            # The context `python -m scripts.images context` assembles, Dockerfile included.
            assert REPO / service["build"]["context"] == CONTEXTS / name
            assert service["build"].get("dockerfile", "Dockerfile") == "Dockerfile"


def test_compose_publishes_ports_on_loopback_only() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"


def test_compose_prometheus_targets_resolve() -> None:
    # Prometheus in Compose uses the Kubernetes config: each "<name>-metrics" DNS name it
    # scrapes must be a network alias of a Compose service.
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    aliases = {alias for service in services.values()
               for network in (service.get("networks") or {}).values()
               for alias in (network or {}).get("aliases", [])}
    config = yaml.safe_load((REPO / "observability" / "prometheus-k8s.yml").read_text())
    names = {name for job in config["scrape_configs"]
             for sd in job.get("dns_sd_configs", []) for name in sd["names"]}
    assert names and names <= aliases, f"no Compose alias for {names - aliases}"
