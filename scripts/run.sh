#!/usr/bin/env bash
# The README's first command: install what is missing (scripts/setup.sh), bring the local stack
# up, run the main job on it (synthetic data, or `--movielens PATH`), and keep serving until
# Ctrl-C. Arguments go to scripts/localstack/up.py (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m scripts.localstack.up "$@"
