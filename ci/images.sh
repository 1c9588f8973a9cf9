#!/usr/bin/env bash
# Builds the three service images with a local Docker engine, e.g. for the dev overlay
# (kind load docker-image recsys-ingest:dev ...), all from the one Dockerfile with the
# build-arg SERVICE. The pipeline builds and pushes the same way with
# docker/build-push-action instead.
#   ci/images.sh [TAG]          tag defaults to "dev"; PREFIX (default "recsys") names them
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-dev}"
prefix="${PREFIX:-recsys}"
for service in ingest trainer recommender; do
  printf '\033[1m[images]\033[0m %s-%s:%s\n' "$prefix" "$service" "$tag"
  docker build --build-arg "SERVICE=$service" --tag "$prefix-$service:$tag" .
done
