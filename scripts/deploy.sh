#!/usr/bin/env bash
# Deploys an overlay of manifests/ to the current kubectl context and waits for every rollout.
#
#   scripts/deploy.sh [--dry-run] [--image NAME=REF]... [--jwks FILE] [--timeout DURATION] OVERLAY
#
#   OVERLAY          dev, prod, or the path of a kustomization directory
#   --image N=REF    run REF for the image named N in the manifests (recsys-ingest,
#                    recsys-trainer, recsys-recommender), e.g. the digest CI just pushed:
#                    --image recsys-ingest=ghcr.io/acme/recsys-ingest@sha256:...
#                    The project's images must end up pinned by digest (no tag to fall
#                    back on), except the dev overlay's local builds (recsys-<name>:dev).
#   --jwks FILE      create or replace the Secret envoy-jwks from FILE: the JWKS (public
#                    keys) of the identity provider whose access tokens Envoy accepts
#   --timeout D      how long each rollout may take (default 10m)
#   --dry-run        render and list what would be applied; with a reachable cluster, also
#                    let the API server validate it (admission included) without changing
#                    anything
#
# The rendered manifests are kept in build/deploy/<overlay>.yaml for review. Images are
# replaced in that rendered copy, so the repository's overlays stay untouched (and only
# kubectl is needed).
#
# Secrets: the repository and the rendered manifests hold none, only references. Before
# applying, this script makes sure that they exist in the namespace:
#   recsys-secrets   postgres-password, redis-password, grafana-admin-password, and MLflow's
#                    mlflow-admin-password, mlflow-flask-secret-key, mlflow-trainer-password,
#                    mlflow-recommender-password: each created once with a random (URL-safe)
#                    value when missing (keys already there are kept), never printed; read
#                    one with kubectl -n recsys get secret recsys-secrets \
#                      -o jsonpath='{.data.grafana-admin-password}' | base64 -d
#   MLflow users     once MLflow is up, scripts/mlflow_users.py runs in its pod: the trainer
#                    (manages the registered model) and the recommender (reads only), with
#                    the passwords above; re-run on every deploy, so a password changed in the
#                    Secret takes effect (then roll the trainer and the recommender)
#   envoy-jwks       jwks.json, from --jwks; when missing without it, the dev overlay takes
#                    the local stack's JWKS (python -m scripts.localstack.pki), so that
#                    `recsys token` mints tokens the dev Envoy accepts; any other overlay
#                    stops and asks for --jwks
#   TLS Secrets      issued and renewed by cert-manager (manifests/base/certificates.yaml;
#                    prod's Ingress certificate by its ClusterIssuer): cert-manager must run
#                    in the cluster, https://cert-manager.io/docs/installation/
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[deploy]\033[0m %s\n' "$*" >&2; }
die() { printf 'deploy: %s\n' "$*" >&2; exit 2; }

dry_run=false
timeout=10m
images=()
overlay=""
jwks=""
while (($#)); do
  case "$1" in
    --dry-run) dry_run=true ;;
    --image) (($# > 1)) || die "--image needs NAME=REF"; images+=("$2"); shift ;;
    --image=*) images+=("${1#--image=}") ;;
    --jwks) (($# > 1)) || die "--jwks needs a file"; jwks="$2"; shift ;;
    --jwks=*) jwks="${1#--jwks=}" ;;
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
[[ -z "$jwks" || -s "$jwks" ]] || die "--jwks $jwks: no such file, or empty"

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

# A tag can be moved; a digest cannot. The overlays name no tag for the project's images
# outside dev, so an image that was not given by digest is refused here.
while read -r ref; do
  [[ "$ref" =~ @sha256:[0-9a-f]{64}$ || "$ref" =~ ^recsys-[a-z]+:dev$ ]] ||
    die "image $ref is not pinned by digest: pass --image NAME=REF@sha256:..."
done < <(sed -nE 's/^[[:space:]]*(- )?image: //p' "$out" | grep -E '(^|/)recsys-[a-z]+([:@]|$)' | sort -u)

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
kubectl get crd certificates.cert-manager.io >/dev/null 2>&1 ||
  die "cert-manager is not installed in this cluster (see --help)"

# The namespace first (the only object with a Pod Security label), then its Secrets.
kubectl apply -f "$out" --selector pod-security.kubernetes.io/enforce
secret_exists() { kubectl -n "$namespace" get secret "$1" >/dev/null 2>&1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

keys=(postgres-password redis-password grafana-admin-password mlflow-admin-password
  mlflow-flask-secret-key mlflow-trainer-password mlflow-recommender-password)
args=()
added=()
for key in "${keys[@]}"; do
  # Keep a value the Secret has; else 24 random bytes as hex: URL-safe, as the connection
  # URLs need. Values only ever pass through owner-only files, never command lines.
  (umask 077 && kubectl -n "$namespace" get secret recsys-secrets \
    -o "go-template={{index .data \"$key\" | base64decode}}" >"$scratch/$key" 2>/dev/null) || true
  if [[ ! -s "$scratch/$key" ]]; then
    (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$scratch/$key")
    added+=("$key")
  fi
  args+=("--from-file=$scratch/$key")
done
if ((${#added[@]})); then
  kubectl -n "$namespace" create secret generic recsys-secrets "${args[@]}" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  log "Secret recsys-secrets: random ${added[*]}"
fi

if [[ -z "$jwks" ]] && ! secret_exists envoy-jwks; then
  [[ "$(basename "$dir")" == dev ]] ||
    die "no Secret envoy-jwks in namespace $namespace: pass --jwks FILE (see --help)"
  python=python3
  [[ -x .venv/bin/python ]] && python=.venv/bin/python
  "$python" -m scripts.localstack.pki >/dev/null
  jwks=.local/pki/jwks.json
  log "dev: Envoy accepts the tokens of the local stack's key (recsys token)"
fi
if [[ -n "$jwks" ]]; then
  kubectl -n "$namespace" create secret generic envoy-jwks --from-file="jwks.json=$jwks" \
    --dry-run=client -o yaml | kubectl apply -f -
  log "Secret envoy-jwks from $jwks"
fi

log "applying"
kubectl apply -f "$out"

log "waiting for MLflow, then making its users"
kubectl -n "$namespace" rollout status deployment/mlflow --timeout="$timeout"
kubectl -n "$namespace" exec -i deployment/mlflow -c mlflow -- python - <scripts/mlflow_users.py

log "waiting for the rollouts (up to $timeout each)"
kubectl get -f "$out" -o name | grep -E '^(deployment|statefulset)\.apps/' | while read -r workload; do
  kubectl -n "$namespace" rollout status "$workload" --timeout="$timeout"
done
log "done"
