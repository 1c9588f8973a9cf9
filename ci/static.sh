#!/usr/bin/env bash
# The pipeline's static checks of everything that ships, runnable locally: hadolint,
# actionlint, zizmor, kustomize render + kubernetes-validate, checkov (with the waivers in
# manifests/checkov-waivers.yaml), promtool, Envoy's config validation, the Compose schema and
# scripts/deploy.sh --dry-run (tests/static). RECSYS_STATIC_STRICT=1 turns a missing tool into
# a failure, not a skip: the pipeline must never pass a check it did not run.
set -euo pipefail
cd "$(dirname "$0")/.."
RECSYS_STATIC_STRICT=1 exec .venv/bin/python -m pytest tests/static -q "$@"
