#!/usr/bin/env bash
# The README's second command: install what is missing (scripts/setup.sh), then the checks and
# test suites. (tox.ini holds the same steps as environments; they share .venv, so CI calls
# the steps directly rather than letting tox recreate the environment between them.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
py=.venv/bin/python
.venv/bin/ruff check .
bash ci/buf.sh lint
$py scripts/gen_protos.py --check
$py -m pytest tests/unit -q
$py -m pytest tests/integration -m "integration or e2e" -q
