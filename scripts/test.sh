#!/usr/bin/env bash
# The README's second command: install what is missing (scripts/setup.sh), then run the
# checks and test suites through tox, the project's one task runner (tox.ini): lint, type,
# gen, static, unit, integration (which includes the end-to-end tests) and images (built and
# run with podman). Extra arguments go to tox,
# e.g. `scripts/test.sh -e unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if (($#)); then
  exec .venv/bin/tox run "$@"
fi
exec .venv/bin/tox run -e lint,type,gen,static,unit,integration,images
