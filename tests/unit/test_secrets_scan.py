"""A secrets scan of the repository (detect-secrets) finds nothing unwaived; waivers say why.

How to keep it green:

- A real secret never goes into the repository: Secrets in Kubernetes, ignored folders
  (.local/pki) locally.
- A false positive in a file that takes comments gets an inline waiver with its reason:
  `# pragma: allowlist secret - a throwaway test password`.
- One that cannot (a JSON example in Markdown, a line in someone else's file) goes into
  .secrets.baseline, audited as not a secret, and into WAIVERS below with its reason:

      .venv/bin/detect-secrets scan --baseline .secrets.baseline   # adds the new finding
      .venv/bin/detect-secrets audit .secrets.baseline             # mark it: not a secret

The baseline also carries the scan's settings: the plugins, the lines it skips — a Kubernetes
`secretName: <name>` names a Secret, it does not hold one — and the files: the baseline and
this module, which hold detect-secrets' hashes of the waived values by design.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.paths import REPO

BASELINE = REPO / ".secrets.baseline"

# (file, detect-secrets' hash of the value) → why it is not a secret.
WAIVERS = {
    ("docs/rest-api.md", "35b6287494cff8b37658098a8e2a34be8d8b393c"):
        "an example eventId in a response (32 hex digits derived from the event's content)",
    ("docs/rest-api.md", "b07e68b117ad7d20fb7510998fca9962b9f10365"):
        "an example eventId in a batch response",
    ("docs/rest-api.md", "d7227c8662121957d29d0bc3f171c47db44dc03c"):
        "an example MLflow run id in a training job",
    ("tests/integration/test_components.py", "49f96cd47cf71ed2a38479e91ed37f54167cf894"):
        "the password of a throwaway redis-server that the test starts and stops",
}


def _findings(baseline: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(path, found["hashed_secret"]): found
            for path, items in baseline["results"].items() for found in items}


def _detect_secrets() -> str:
    found = shutil.which("detect-secrets", path=str(Path(sys.executable).parent))
    assert found, "detect-secrets is missing: pip install -e '.[dev]'"
    return found


def test_the_scan_finds_nothing_unwaived(tmp_path: Path) -> None:
    # Scan the repository as it is now, with the baseline's settings, into a copy of it.
    scanned = tmp_path / "baseline.json"
    shutil.copy(BASELINE, scanned)
    subprocess.run([_detect_secrets(), "scan", "--baseline", str(scanned)], cwd=REPO,
                   check=True, capture_output=True, timeout=600)
    found = _findings(json.loads(scanned.read_text()))
    unwaived = {f"{path}:{item['line_number']} ({item['type']})"
                for (path, digest), item in found.items() if (path, digest) not in WAIVERS}
    assert not unwaived, (
        f"possible secrets: {sorted(unwaived)}. Remove them, or waive a false positive "
        "(see this module's docstring)")


def test_every_waiver_is_audited_and_explained() -> None:
    baseline = _findings(json.loads(BASELINE.read_text()))
    assert set(baseline) == set(WAIVERS), "WAIVERS and .secrets.baseline disagree"
    for key, item in baseline.items():
        assert item.get("is_secret") is False, f"{key}: audit it (detect-secrets audit)"
        assert WAIVERS[key].strip(), key
