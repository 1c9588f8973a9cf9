"""Recommend through the edge: REST via Envoy against direct gRPC, at concurrency 1, 8 and 64.

Starts Redis, MLflow, the recommender (`python -m services.recommender`) serving a champion of
MovieLens-100k shape (random factors: 943 users, 1,682 items, 128 factors) and two Envoys in
front of it, a plain one and one secured as in production (TLS, a token checked on every
call, RBAC on its scope, the rate limits per address and per client, set high enough never to
refuse), then measures, in one run and against the same servers:

- REST via Envoy, with wrk (HTTP/1.1 keep-alive, one connection per unit of concurrency);
- REST via the secured Envoy, with wrk over TLS, every request carrying the token;
- gRPC direct, with serve.py's grpc.aio load client in its own process (one HTTP/2 channel);
- gRPC via Envoy, with the same client: the proxy hop alone, without the clients' difference.

Requests cycle through 500 known users with k=10, every answer cached before the clock starts
(as serve.py's "hit"), so the figures are the edge's overhead, not model scoring. The
recommender has CPU 0 to itself; Envoy and the clients share the rest. Concurrency 1 shows the
hop's latency on an idle server; 8 and 64 saturate it. Targets: REST via Envoy costs at most
1 ms more at p50 than direct gRPC (at 8 and 64); via the secured Envoy at most 0.5 ms more
(at 8).

    .venv/bin/python scripts/bench/edge.py [--duration 10] [--warmup 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

# Run as a file (`python scripts/bench/edge.py`): make the repository's `scripts` importable.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts.bench.serve import Figures, Recommender, load, random_artifact, register
from scripts.localstack.components import HOST, MlflowServer, RedisServer, free_port
from scripts.localstack.envoy import Envoy
from scripts.localstack.pki import ensure_pki
from services.edge import tokens
from services.edge.policy import DEFAULT_POLICIES, RateLimit, RoutePolicy
from services.edge.profiles import pki_security

MODEL = "bench-edge"
CONCURRENCIES = (1, 8, 64)
TARGET_AT = (8, 64)  # the concurrencies the target applies to
LOAD_USERS = 500
TARGET_P50_MS = 1.0
SECURED_TARGET_AT = 8
SECURED_TARGET_P50_MS = 0.5
# Far above what the load sends: the limits are evaluated on every request, never refuse one.
UNLIMITED = RateLimit(10_000_000)
SECURED_POLICIES = {**DEFAULT_POLICIES, "recommender": RoutePolicy(
    scope=tokens.RECOMMEND_READ, rate_limit=UNLIMITED)}
# The recommender gets CPU 0 to itself; Envoy and the load clients share the others, as in
# production, where Envoy runs in its own pods and would not take the service's CPU. One
# Envoy worker per CPU it has (production sizes --concurrency to the pod's CPU limit).
SERVER_CPUS = {0}
EDGE_CPUS = set(range(1, os.cpu_count() or 2)) or {0}
ENVOY_WORKERS = len(EDGE_CPUS)


def _pinned(argv: list[str], cpus: set[int]) -> list[str]:
    return ["taskset", "-c", ",".join(map(str, sorted(cpus))), *argv]


class PinnedRecommender(Recommender):
    def command(self) -> list[str]:
        return _pinned(super().command(), SERVER_CPUS)


class PinnedEnvoy(Envoy):
    def command(self) -> list[str]:
        return _pinned(super().command(), EDGE_CPUS)
LABELS = {"rest_envoy": ("wrk", "REST→Envoy"), "grpc_direct": ("grpc.aio", "gRPC direct"),
          "grpc_envoy": ("grpc.aio", "gRPC→Envoy"), "rest_secured": ("wrk", "REST→secured")}

WRK_SCRIPT = """
local users = {%(users)s}
local i = 0
%(headers)s
request = function()
  i = i %% #users + 1
  return wrk.format("GET", "/v1/users/" .. users[i] .. "/recommendations?k=10")
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %%d, "errors": %%d, "seconds": %%f, "p50_ms": %%f, "p99_ms": %%f}\\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
    summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3))
end
"""


def wrk(url: str, script: Path, *, concurrency: int, seconds: float) -> Figures:
    binary = shutil.which("wrk") or "/usr/bin/wrk"
    out = subprocess.run(
        [binary, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
         "--timeout", "5s", "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK_JSON "))
    return Figures(**json.loads(line.removeprefix("WRK_JSON ")))


def bench(duration: float, warmup: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        workdir = Path(tmp)
        with (
            RedisServer(workdir / "redis") as redis,
            MlflowServer(workdir / "mlflow") as mlflow,
        ):
            print("registering the champion ...", flush=True)
            artifact = random_artifact(943, 1682, 128, seen_per_user=100)
            register(mlflow.tracking_uri, MODEL, artifact, workdir)
            users = artifact.user_ids.tolist()[:LOAD_USERS]  # type: ignore[attr-defined]
            catalogue = workdir / "catalogue.json"
            catalogue.write_text(json.dumps({"users": users,
                                             "items": artifact.item_ids.tolist()}))  # type: ignore[attr-defined]
            quoted = ", ".join(f'"{u}"' for u in users)
            script = workdir / "recommend.lua"
            script.write_text(WRK_SCRIPT % {"users": quoted, "headers": ""})
            pki = ensure_pki(workdir / "pki")
            token = pki.mint_token([tokens.RECOMMEND_READ], subject="bench")
            secured_script = workdir / "recommend-secured.lua"
            secured_script.write_text(WRK_SCRIPT % {
                "users": quoted, "headers": f'wrk.headers["authorization"] = "Bearer {token}"'})
            security = replace(pki_security(pki.directory, policies=SECURED_POLICIES),
                               per_address=UNLIMITED)
            dead = f"{HOST}:{free_port()}"  # this run has no ingest or trainer
            with (
                PinnedRecommender(workdir / "recommender", mlflow=mlflow.tracking_uri,
                                  redis=redis.url, model=MODEL, local_cache=True) as recommender,
                PinnedEnvoy(workdir / "envoy", ingest=dead, trainer=dead,
                            recommender=recommender.target,
                            concurrency=ENVOY_WORKERS) as envoy,
                PinnedEnvoy(workdir / "envoy-secured", ingest=dead, trainer=dead,
                            recommender=recommender.target, concurrency=ENVOY_WORKERS,
                            security=security) as secured,
            ):
                os.sched_setaffinity(0, EDGE_CPUS)  # wrk and the gRPC clients inherit it
                rows = measure(envoy, secured, recommender.target, catalogue,
                               (script, secured_script), duration=duration, warmup=warmup)
    report(rows, duration)


def measure(envoy: Envoy, secured: Envoy, direct: str, catalogue: Path,
            scripts: tuple[Path, Path], *, duration: float,
            warmup: float) -> dict[tuple[str, int], Figures]:
    rows: dict[tuple[str, int], Figures] = {}
    print(f"{'client':<9} {'path':<12} {'conc':>5} {'qps':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>7}", flush=True)
    for c in CONCURRENCIES:
        for key, target in (("grpc_direct", direct), ("grpc_envoy", envoy.target)):
            rows[key, c] = load(target, "hit", catalogue, concurrency=c, seconds=duration,
                                warmup=warmup)
        for key, edge, script in (("rest_envoy", envoy, scripts[0]),
                                  ("rest_secured", secured, scripts[1])):
            wrk(edge.url, script, concurrency=c, seconds=warmup)
            rows[key, c] = wrk(edge.url, script, concurrency=c, seconds=duration)
        for key, (client, path) in LABELS.items():
            f = rows[key, c]
            print(f"{client:<9} {path:<12} {c:>5} {f.qps:>8.0f} {f.p50_ms:>8.2f} "
                  f"{f.p99_ms:>8.2f} {f.errors:>7}", flush=True)
    return rows


def report(rows: dict[tuple[str, int], Figures], duration: float) -> None:
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}); Envoy --concurrency "
          f"{ENVOY_WORKERS}; recommender on CPUs {sorted(SERVER_CPUS)}, Envoy and the load "
          f"clients on {sorted(EDGE_CPUS)}; "
          f"{duration:.0f} s per figure; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    result: dict[str, str] = {}
    met = True
    secured_met = True
    for c in CONCURRENCIES:
        rest, direct, via, secure = (rows[key, c] for key in LABELS)
        extra = rest.p50_ms - direct.p50_ms
        secured_extra = secure.p50_ms - direct.p50_ms
        if c in TARGET_AT:
            met = met and extra <= TARGET_P50_MS
        if c == SECURED_TARGET_AT:
            secured_met = secured_extra <= SECURED_TARGET_P50_MS
        target = f" (target <= +{TARGET_P50_MS:.0f} ms)" if c in TARGET_AT else ""
        secured_target = (f" (target <= +{SECURED_TARGET_P50_MS} ms)"
                          if c == SECURED_TARGET_AT else "")
        print(f"concurrency {c}: REST via Envoy p50 {extra:+.2f} ms against direct gRPC"
              f"{target}; via the secured Envoy {secured_extra:+.2f} ms{secured_target}; "
              f"gRPC via Envoy {via.p50_ms - direct.p50_ms:+.2f} ms")
        for key in LABELS:
            f = rows[key, c]
            result[f"{key}_c{c}_qps"] = f"{f.qps:.0f}"
            result[f"{key}_c{c}_p50_ms"] = f"{f.p50_ms:.2f}"
            result[f"{key}_c{c}_p99_ms"] = f"{f.p99_ms:.2f}"
        result[f"rest_minus_grpc_c{c}_p50_ms"] = f"{extra:.2f}"
        result[f"secured_minus_grpc_c{c}_p50_ms"] = f"{secured_extra:.2f}"
    result["target_met"] = str(met).lower()
    result["secured_target_met"] = str(secured_met).lower()
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per figure")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each figure")
    args = parser.parse_args()
    bench(args.duration, args.warmup)


if __name__ == "__main__":
    main()
