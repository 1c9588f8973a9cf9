#!/usr/bin/env bash
# Re-resolves the lock files in requirements/: every Python package at an exact version with
# the SHA-256 of each of its files, for CPython 3.11 on x86-64 Linux (glibc 2.36, Debian 12;
# from Python 3.11.2, Debian's, which the images run).
# scripts/setup.sh and the Dockerfile install them with `pip install --require-hashes`, so a
# file that changed on the index after it was locked is refused.
#
#   scripts/lock.sh                  # after a change to pyproject.toml's dependencies
#   scripts/lock.sh --upgrade        # move every package to its newest allowed version
#   scripts/lock.sh --upgrade-package grpcio
#
#   requirements/all.txt             .venv: the project with every extra, its build
#                                    requirements and pip (scripts/setup.sh)
#   requirements/<service>.txt       an image: the core list plus the service's extra, at the
#                                    versions of all.txt
#   requirements/checkov.txt         .venv-tools: checkov (requirements/checkov.in), whose pins
#                                    conflict with the project's
#
# Without options the versions already locked are kept (uv prefers them): only what the
# change needs moves. torch is the CPU build (scripts/torch_wheels.py says from where).
set -euo pipefail
cd "$(dirname "$0")/.."

# The one torch release the project runs (DESIGN.md): the CPU build.
TORCH_VERSION=2.13.0+cpu

PATH="$PWD/.venv/bin:$PATH"
mapfile -t torch_source < <(python -m scripts.torch_wheels "$TORCH_VERSION")

compile() {
  local python="$1" out="$2"
  shift 2
  uv pip compile --quiet --generate-hashes --python-version "$python" \
    --python-platform x86_64-manylinux_2_36 --custom-compile-command scripts/lock.sh \
    "${torch_source[@]}" --constraint <(echo "torch==$TORCH_VERSION") \
    --output-file "$out" "$@"
}

# The build requirements and pip itself are locked too: setup.sh installs the project with
# --no-build-isolation from what the lock put in .venv.
build_requirements() {
  python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'
  echo pip
}

compile 3.11.2 requirements/all.txt "$@" pyproject.toml --all-extras - < <(build_requirements)
for service in ingest trainer recommender; do
  compile 3.11.2 "requirements/$service.txt" "$@" pyproject.toml --extra "$service" \
    --constraint requirements/all.txt
done
# checkov's pins need Python 3.11.5 or later (the machines' and CI's interpreter, not the images').
compile 3.11.5 requirements/checkov.txt "$@" requirements/checkov.in
echo "locked:" requirements/*.txt
