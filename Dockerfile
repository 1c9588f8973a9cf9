# syntax=docker/dockerfile:1
# The image of each gRPC service, one Dockerfile for all three. Build from the repository root
# (see .dockerignore), naming the service:
#   docker build --build-arg SERVICE=recommender -t recsys-recommender .
# What differs between the images is derived, not repeated: the dependencies are the core list
# plus the service's extra in pyproject.toml; torch, when that extra needs it, comes first from
# the CPU index; the code is the service's package and every services.* package it imports;
# ports and entry point are in the service's stage below.
#
# Base: the official python:3.11.13-slim-bookworm, pinned by its multi-arch index digest so a
# rebuild gets the same interpreter and system libraries; bump tag and digest together.
ARG SERVICE
FROM python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1 AS python

# The service's requirements, alone in a stage: the build stage copies only the resulting file,
# so its dependency layers are rebuilt when this service's requirements change, not whenever
# pyproject.toml does.
FROM python AS requirements
ARG SERVICE
WORKDIR /build
COPY pyproject.toml ./
RUN python -c "import sys, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print(*p['dependencies'], *p['optional-dependencies'][sys.argv[1]], sep='\n')" "${SERVICE:?build with --build-arg SERVICE=ingest, trainer or recommender}" > requirements.txt

FROM python AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
COPY --from=requirements /build/requirements.txt ./
# torch first, pinned, from the CPU index, when the service needs it: a plain `torch`
# requirement pulls a multi-gigabyte CUDA build. The extra's looser `torch>=...` is then
# already satisfied.
ARG TORCH_VERSION=2.13.0
RUN if grep -q '^torch\b' requirements.txt; then \
      pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"; \
    fi \
 && pip install --no-cache-dir -r requirements.txt

# The code: the generated contracts, and the service's package with every services.* package
# it imports, transitively: core, and model (the contract between training and serving) for
# the trainer and the recommender. No service imports another's package, so no image carries
# another service's code. tests/static/test_images.py runs this same script and imports the
# service from what it copies. Byte-compiled here because the root filesystem is read-only at
# run time. /data: see the trainer's stage.
ARG SERVICE
COPY gen/python /app/gen/python
COPY services /build/services
RUN install -d -m 0750 /data \
 && python - "${SERVICE}" /build/services /app <<'EOF'
import ast
import compileall
import shutil
import sys
from pathlib import Path

service, source, app = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
target = app / "services"
if not (source / service / "__main__.py").is_file():
    sys.exit(f"SERVICE={service!r} is not a service: no services/{service}/__main__.py")


def imported(package: str) -> set[str]:
    """The services.* packages that the modules of services/<package> import."""
    found = set()
    for path in (source / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            found |= {name.split(".")[1] for name in names
                      if name.startswith("services.") and (source / name.split(".")[1]).is_dir()}
    return found


needed, pending = set(), {service}
while pending:
    package = pending.pop()
    needed.add(package)
    pending |= imported(package) - needed
target.mkdir(parents=True)
shutil.copy2(source / "__init__.py", target)
for package in sorted(needed):
    shutil.copytree(source / package, target / package,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
print("services packages:", *sorted(needed))
sys.exit(not compileall.compile_dir(app, quiet=1))
EOF


# What every service image shares.
FROM python AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen/python \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    RECSYS_GRPC_HOST=0.0.0.0 \
    RECSYS_LOG_FORMAT=json
# A fixed, high, non-root UID/GID: Kubernetes' runAsNonRoot can verify it, and it collides
# with no host user.
RUN groupadd --system --gid 10001 recsys \
 && useradd --system --no-log-init --uid 10001 --gid recsys --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin recsys
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001
# For Docker and Compose (Kubernetes uses its own gRPC probes): healthy once every service of
# the server reports SERVING on the standard gRPC health service, asked in plaintext on the
# health-only port when there is one (the gRPC port then speaks TLS).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; port = os.environ.get('RECSYS_HEALTH_PORT') or os.environ['RECSYS_GRPC_PORT']; c = grpc.insecure_channel('127.0.0.1:' + port); s = g.HealthStub(c).Check(h.HealthCheckRequest(service=''), timeout=4).status; sys.exit(s != h.HealthCheckResponse.SERVING)"]

# Each service's own ports (the ones the local stack and the manifests use) and entry point.
FROM runtime AS service-ingest
ENV RECSYS_GRPC_PORT=50051 \
    RECSYS_METRICS_PORT=9101
EXPOSE 50051 9101
ENTRYPOINT ["python", "-m", "services.ingest"]

FROM runtime AS service-trainer
ENV RECSYS_GRPC_PORT=50052 \
    RECSYS_METRICS_PORT=9102 \
    RECSYS_TRAINER_DATA_DIR=/data
# /data holds the dataset store: mount a persistent volume there.
COPY --from=build --chown=10001:10001 /data /data
EXPOSE 50052 9102
ENTRYPOINT ["python", "-m", "services.trainer"]

FROM runtime AS service-recommender
ENV RECSYS_GRPC_PORT=50053 \
    RECSYS_METRICS_PORT=9103
EXPOSE 50053 9103
ENTRYPOINT ["python", "-m", "services.recommender"]

# The image: the stage of the service named by SERVICE (a stage of this file, not an image
# to pull, so hadolint's rule for tagging base images does not apply).
# hadolint ignore=DL3006
FROM service-${SERVICE}
