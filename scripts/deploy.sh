#!/usr/bin/env bash
# Deploys an overlay of manifests/ to the current kubectl context and waits for every rollout.
#
#   scripts/deploy.sh [--dry-run] [--image NAME=REF]... [--timeout DURATION] OVERLAY
#
#   OVERLAY          dev, prod, or the path of a kustomization directory
#   --image N=REF    run REF for the image named N in the manifests (recsys-ingest,
#                    recsys-trainer, recsys-recommender), e.g. the digest CI just pushed:
#                    --image recsys-ingest=ghcr.io/acme/recsys-ingest@sha256:...
#   --timeout D      how long each rollout may take (default 10m)
#   --dry-run        render and list what would be applied; with a reachable cluster, also
#                    let the API server validate it (admission included) without changing
#                    anything
#
# The rendered manifests are kept in build/deploy/<overlay>.yaml for review. Images are
# replaced in that rendered copy, so the repository's overlays stay untouched (and only
# kubectl is needed). prod expects the Secret recsys-secrets in the namespace first, e.g.
#   kubectl -n recsys create secret generic recsys-secrets \
#     --from-literal=postgres-password=... --from-literal=redis-password=... \
#     --from-literal=grafana-admin-password=...
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[deploy]\033[0m %s\n' "$*" >&2; }
die() { printf 'deploy: %s\n' "$*" >&2; exit 2; }

dry_run=false
timeout=10m
images=()
overlay=""
while (($#)); do
  case "$1" in
    --dry-run) dry_run=true ;;
    --image) (($# > 1)) || die "--image needs NAME=REF"; images+=("$2"); shift ;;
    --image=*) images+=("${1#--image=}") ;;
    --timeout) (($# > 1)) || die "--timeout needs a duration"; timeout="$2"; shift ;;
    --timeout=*) timeout="${1#--timeout=}" ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z "$overlay" ]] || die "one overlay only"; overlay="$1" ;;
  esac
  shift
done
[[ -n "$overlay" ]] || die "which overlay? dev, prod or a path (see --help)"
dir="$overlay"
[[ -d "$dir" ]] || dir="manifests/overlays/$overlay"
[[ -f "$dir/kustomization.yaml" ]] || die "no kustomization.yaml in $dir"

out="build/deploy/$(basename "$dir").yaml"
mkdir -p "$(dirname "$out")"
log "rendering $dir"
kubectl kustomize "$dir" >"$out"

for spec in "${images[@]}"; do
  name="${spec%%=*}"
  ref="${spec#*=}"
  [[ "$spec" == *=* && -n "$name" && -n "$ref" ]] || die "--image wants NAME=REF, got '$spec'"
  # An image line whose last path component is NAME, with any tag or digest.
  pattern="^([[:space:]]*(- )?image: )([^[:space:]]*/)?${name}([:@][^[:space:]]*)?$"
  grep -Eq "$pattern" "$out" || die "no image named $name in $dir"
  sed -E -i "s#${pattern}#\\1${ref}#" "$out"
  log "image $name -> $ref"
done

namespace=$(sed -n 's/^  namespace: //p' "$out" | sort -u)
[[ $(wc -l <<<"$namespace") == 1 ]] || die "expected one namespace in $out, found: $namespace"
log "$(grep -c '^kind: ' "$out") objects for namespace $namespace in $out"

if kubectl version --request-timeout=5s >/dev/null 2>&1; then
  reachable=true
else
  reachable=false
fi

if $dry_run; then
  grep -E '^(kind|  name): ' "$out" | paste - - | awk '{print "  " $2 "/" $4}'
  if $reachable; then
    log "server-side dry run against $(kubectl config current-context)"
    kubectl apply --dry-run=server -f "$out" >/dev/null
    log "the API server accepted every object; nothing was changed"
  else
    log "no cluster reachable: rendered only; nothing was changed"
  fi
  exit 0
fi

$reachable || die "no cluster reachable with the current kubectl context"
log "context $(kubectl config current-context)"
# A Secret the manifests use but do not carry (prod) must be in the cluster already.
if grep -Eq '(secretName|name): recsys-secrets$' "$out" &&
  ! kubectl -n "$namespace" get secret recsys-secrets >/dev/null 2>&1; then
  die "create the Secret recsys-secrets in namespace $namespace first (see --help)"
fi

log "applying"
kubectl apply -f "$out"

log "waiting for the rollouts (up to $timeout each)"
kubectl get -f "$out" -o name | grep -E '^(deployment|statefulset)\.apps/' | while read -r workload; do
  kubectl -n "$namespace" rollout status "$workload" --timeout="$timeout"
done
log "done"
