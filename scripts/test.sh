#!/usr/bin/env bash
# The README's second command: install what is missing (scripts/setup.sh), then run every
# check and test suite through tox. Extra arguments go to tox, e.g. `scripts/test.sh -e unit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if (($#)); then
  exec .venv/bin/tox "$@"
fi
exec .venv/bin/tox -e lint,type,gen,unit,static,integration
