# syntax=docker/dockerfile:1
# The image of each gRPC service, one Dockerfile for all three. It builds from a context that
# scripts/images assembles per service (build/images/<service>/: this file, the service's
# lock file as requirements.txt, gen/python, and only the services.* packages the service
# imports), so no image, and no build context, holds another service's code:
#   python -m scripts.images build                      # all three, with podman (README)
#   python -m scripts.images context recommender        # only the context, then e.g.
#   docker build --build-arg SERVICE=recommender -t recsys-recommender build/images/recommender
#
# BASE: the official python:3.11.13-slim-bookworm, named in full (podman resolves no short
# name without a terminal) and pinned by its multi-arch index digest, so a rebuild gets the
# same interpreter and system libraries (bump tag and digest together).
# Where no registry is reachable, scripts/images passes a Debian 12 base it makes with
# debootstrap (Python 3.11 from Debian). The build uses python3 and groupadd/useradd only.
ARG BASE=docker.io/library/python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1
ARG SERVICE
# hadolint ignore=DL3006
FROM ${BASE} AS python

FROM python AS build
# The lock pins every package with its hashes (scripts/lock.sh); torch is the CPU build, which
# PyPI does not have. PIP_EXTRA_INDEX_URL: where torch comes from (PyTorch's CPU index; an
# empty value with PIP_FIND_LINKS, a folder mounted into the build, instead). PIP_CERT: a CA
# bundle mounted into the build, for a network that re-signs TLS. None of them is in the image.
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_PROGRESS_BAR=off \
    PIP_ROOT_USER_ACTION=ignore
# The service's environment has no pip: a separate one installs into it.
RUN python3 -m venv /opt/pip \
 && python3 -m venv --without-pip /opt/venv
COPY requirements.txt /build/
RUN /opt/pip/bin/pip --python /opt/venv/bin/python install --require-hashes -r /build/requirements.txt

# The code: the generated contracts and the service's packages, byte-compiled here because
# the root filesystem is read-only at run time. /data: see the trainer's stage.
COPY gen/python /app/gen/python
COPY services /app/services
ARG SERVICE
RUN if [ ! -f "/app/services/$SERVICE/__main__.py" ]; then \
      echo "SERVICE=$SERVICE: this build context has no services/$SERVICE (python -m scripts.images context $SERVICE)" >&2; \
      exit 1; \
    fi \
 && install -d -m 0750 /data \
 && /opt/venv/bin/python -m compileall -q /app

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
