#!/usr/bin/env bash
# buf checks on protos/, run by tox (tox -e lint, tox -e buf-breaking): `ci/buf.sh lint` (lint
# + format), `ci/buf.sh breaking` (against the git ref in BREAKING_AGAINST, default origin/main
# or main). The googleapis protos buf.yaml names are staged from the googleapis-common-protos
# wheel by scripts/gen_protos.py.
set -euo pipefail
cd "$(dirname "$0")/.."
buf=node_modules/.bin/buf
[[ -d build/googleapis ]] || .venv/bin/python scripts/gen_protos.py --check >/dev/null
case "${1:-lint}" in
  lint)
    "$buf" lint
    "$buf" format --diff --exit-code protos
    ;;
  breaking)
    ref="${BREAKING_AGAINST:-}"
    if [[ -z "$ref" ]]; then
      ref=$(git rev-parse --verify -q origin/main >/dev/null && echo origin/main || echo main)
    fi
    if ! git rev-parse --verify -q "$ref^{commit}" >/dev/null; then
      echo "buf breaking: no commit $ref to compare with (BREAKING_AGAINST)" >&2
      exit 2
    fi
    if ! git cat-file -e "$ref:protos" 2>/dev/null; then
      echo "buf breaking: $ref has no protos/ yet, nothing to compare"
      exit 0
    fi
    # The ref's tree lacks the staged (ignored) googleapis module: export it and add it.
    against=$(mktemp -d)
    trap 'rm -rf "$against"' EXIT
    git archive "$ref" buf.yaml protos | tar -x -C "$against"
    mkdir -p "$against/build" && cp -r build/googleapis "$against/build/"
    "$buf" breaking --against "$against"
    ;;
  *) echo "usage: ci/buf.sh lint | [BREAKING_AGAINST=REF] ci/buf.sh breaking" >&2; exit 2 ;;
esac
