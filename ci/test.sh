#!/usr/bin/env bash
# The pipeline's test job, runnable locally: unit tests, then integration and end-to-end
# tests against real servers that the fixtures start.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest tests/unit -q "$@"
suites=(tests/integration)
[[ -d tests/e2e ]] && suites+=(tests/e2e)
.venv/bin/python -m pytest "${suites[@]}" -m "integration or e2e" -q "$@"
