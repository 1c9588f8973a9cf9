#!/usr/bin/env bash
# The pipeline's lint job, runnable locally: ruff, mypy, generated code up to date, buf lint
# and format, and buf breaking against a git ref (default origin/main, else main; the
# pipeline passes the pull request's base or the previous commit as BREAKING_AGAINST).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n\033[1m[lint]\033[0m %s\n' "$*"; }
step "ruff"
.venv/bin/ruff check .
step "mypy"
.venv/bin/mypy
step "gen/ matches protos/"
.venv/bin/python scripts/gen_protos.py --check
step "buf lint and format"
bash ci/buf.sh lint
step "buf breaking"
bash ci/buf.sh breaking "${BREAKING_AGAINST:-}"
