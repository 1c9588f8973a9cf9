"""A service's image run with podman the way its Kubernetes workload runs it
(manifests/base/<service>.yaml): the image's own user, a read-only root filesystem with the
workload's emptyDirs as the only writable tmpfs, its volume claims as podman volumes, its TLS
Secret as a read-only folder, every capability dropped, no privilege escalation, and its
grace period on stop. On the host's network, bound to loopback: the test's real broker,
MLflow and Redis are on loopback too."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from recsys.trainer.v1 import trainer_pb2
from scripts.images.podman import env as podman_env
from scripts.images.podman import exists, podman
from scripts.localstack.components import free_ports
from scripts.localstack.pki import Pki
from services.core.client import channel
from services.core.names import SERVICE_NAMES
from services.core.tls import ClientTLS
from tests.support.paths import REPO
from tests.support.polling import eventually
from tests.support.trainer_server import Ingested

SERVING = health_pb2.HealthCheckResponse.SERVING
# How a container of a service's image runs (ServiceContainer.confinement): as the Dockerfile's
# fixed non-root user and group, writing nowhere but in the workload's emptyDir /tmp.
CONFINED = {"user": (10001, 10001), "root": "Read-only file system", "tmp": ""}


@dataclass(frozen=True)
class Workload:
    """What a service's Kubernetes workload asks of its container."""

    read_only_root: bool
    drop_all_capabilities: bool
    no_privilege_escalation: bool
    grace_s: int
    empty_dirs: dict[str, str]  # mount path -> size limit
    claims: list[str]  # mount paths of volume claims
    secrets: list[str]  # mount paths of Secrets (the TLS certificate)
    tls_env: dict[str, str]  # RECSYS_TLS_* from the shared ConfigMap


def workload(service: str) -> Workload:
    documents = yaml.safe_load_all((REPO / "manifests" / "base" / f"{service}.yaml").read_text())
    spec = next(d for d in documents if d and d["kind"] in ("Deployment", "StatefulSet"))["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    mounts = container.get("volumeMounts", [])
    security = container["securityContext"]
    kustomization = yaml.safe_load((REPO / "manifests" / "base" / "kustomization.yaml").read_text())
    config = next(g for g in kustomization["configMapGenerator"] if g["name"] == "recsys-config")
    literals = dict(literal.split("=", 1) for literal in config["literals"])
    return Workload(
        read_only_root=security["readOnlyRootFilesystem"],
        drop_all_capabilities=security["capabilities"]["drop"] == ["ALL"],
        no_privilege_escalation=security["allowPrivilegeEscalation"] is False,
        grace_s=pod["terminationGracePeriodSeconds"],
        empty_dirs={m["mountPath"]: volumes[m["name"]]["emptyDir"].get("sizeLimit", "")
                    for m in mounts if "emptyDir" in volumes.get(m["name"], {})},
        claims=[m["mountPath"] for m in mounts if m["name"] in claims],
        secrets=[m["mountPath"] for m in mounts if "secret" in volumes.get(m["name"], {})],
        tls_env={k: v for k, v in literals.items() if k.startswith("RECSYS_TLS_")},
    )


def tls_folder(pki: Pki, folder: Path) -> Path:
    """The server's certificate, key and CA under the names cert-manager gives them in a
    Secret. Readable by the container's user, as the Secret's mode and fsGroup make them
    (`folder` must be inside a private one)."""
    folder.mkdir(mode=0o755)
    for source, name in ((pki.server_cert, "tls.crt"), (pki.server_key, "tls.key"),
                         (pki.ca_cert, "ca.crt")):
        shutil.copyfile(source, folder / name)
        (folder / name).chmod(0o444)
    return folder


def _size(limit: str) -> str:
    """A Kubernetes quantity (64Mi, 2Gi) as tmpfs' size option (64m, 2g)."""
    return limit.removesuffix("i").lower()


@dataclass
class ServiceContainer:
    """A running container of `service`'s image, and how a test talks to it."""

    service: str
    name: str
    tls: ClientTLS
    grace_s: int
    ports: dict[str, int]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    def channel(self) -> grpc.Channel:
        """A mutual-TLS channel to the service's gRPC port."""
        return channel(self.target, tls=self.tls)

    def health(self) -> int:
        """The service's status, asked in plaintext on the health-only port."""
        with grpc.insecure_channel(f"127.0.0.1:{self.ports['health']}") as health:
            return health_pb2_grpc.HealthStub(health).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAMES[self.service]),
                timeout=2).status

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(
            podman("inspect", "--format", "{{json .State}}", self.name))
        return state

    def wait_serving(self, timeout: float = 120) -> None:
        def serving() -> bool:
            if not self.state()["Running"]:
                raise AssertionError(f"{self.name} exited:\n{self.logs()}")
            try:
                return self.health() == SERVING
            except grpc.RpcError:
                return False  # not listening yet

        eventually(serving, timeout=timeout, what=f"{self.service} container SERVING")

    def python(self, code: str) -> str:
        """Run Python in the running container, as its user; what it printed."""
        return podman("exec", self.name, "python", "-c", code)

    def process_ids(self) -> tuple[int, int]:
        """The real user and group ids of the container's main process (PID 1)."""
        status = self.python("print(open('/proc/1/status').read())")
        ids = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
               if line.startswith(("Uid:", "Gid:"))}
        return ids["Uid"], ids["Gid"]

    def write_error(self, path: str) -> str:
        """The error writing `path` in the container gives (empty when it succeeds)."""
        return self.python(f"try: open({path!r}, 'w').close()\n"
                           "except OSError as error: print(error.strerror)\n").strip()

    def metric(self, name: str) -> float | None:
        """The value of the unlabelled sample `name` on the service's /metrics."""
        url = f"http://127.0.0.1:{self.ports['metrics']}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        return next((sample.value for family in text_string_to_metric_families(body)
                     for sample in family.samples if sample.name == name), None)

    def confinement(self) -> dict[str, object]:
        """Who the service runs as, and where it may write: the image's user; the root
        filesystem refuses writes, /tmp (an emptyDir) takes them."""
        return {"user": self.process_ids(), "root": self.write_error("/app/probe"),
                "tmp": self.write_error("/tmp/probe")}

    def logs(self) -> str:
        """What the service wrote, standard output and error together."""
        return subprocess.run(["podman", "logs", self.name], env=podman_env(), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                              check=True).stdout

    def logged(self) -> list[str]:
        """The messages of its JSON log lines."""
        return [json.loads(line)["msg"] for line in self.logs().splitlines()
                if line.startswith("{")]

    def terminate(self) -> int:
        """SIGTERM, as Kubernetes stops a pod; SIGKILL only past the grace period. The exit
        code (137 when it had to be killed)."""
        podman("stop", "--time", str(self.grace_s), self.name, timeout=self.grace_s + 60)
        code: int = self.state()["ExitCode"]
        return code


@dataclass(frozen=True)
class Trained:
    """A training job run by the trainer's image, the container that ran it, and where its
    events and its model are."""

    trainer: ServiceContainer
    job: trainer_pb2.TrainingJob
    topic: Ingested
    kafka_bootstrap: str
    mlflow_tracking_uri: str
    model_name: str


@contextmanager
def running(service: str, image: str, pki: Pki, *,
            env: dict[str, str]) -> Iterator[ServiceContainer]:
    """`image` running as `service`'s workload, with `env` on top of its ports and TLS."""
    with tempfile.TemporaryDirectory(prefix="recsys-container-") as private:
        yield from _running(service, image, pki, Path(private), env)


def _running(service: str, image: str, pki: Pki, private: Path,
             env: dict[str, str]) -> Iterator[ServiceContainer]:
    spec = workload(service)
    grpc_port, metrics_port, health_port = free_ports(3)
    name = f"recsys-test-{service}-{uuid.uuid4().hex[:8]}"
    tls_dir = tls_folder(pki, private / "tls")
    settings = {"RECSYS_GRPC_HOST": "127.0.0.1", "RECSYS_GRPC_PORT": str(grpc_port),
                "RECSYS_METRICS_PORT": str(metrics_port), "RECSYS_HEALTH_PORT": str(health_port),
                **spec.tls_env, **env}
    options = ["--network", "host", "--no-healthcheck"]
    if spec.read_only_root:
        # podman's --read-only adds writable tmpfs of its own unless told not to.
        options += ["--read-only", "--read-only-tmpfs=false"]
    if spec.drop_all_capabilities:
        options += ["--cap-drop", "ALL"]
    if spec.no_privilege_escalation:
        options += ["--security-opt", "no-new-privileges"]
    for path, limit in spec.empty_dirs.items():
        options += ["--tmpfs", f"{path}:rw,mode=1777" + (f",size={_size(limit)}" if limit else "")]
    for path in spec.secrets:
        options += ["--volume", f"{tls_dir}:{path}:ro"]
    volumes = [f"{name}-{index}" for index in range(len(spec.claims))]
    for volume, path in zip(volumes, spec.claims, strict=True):
        # A new named volume takes the ownership of the image's folder, as a claim mounted
        # with the pod's fsGroup is writable by the service.
        options += ["--volume", f"{volume}:{path}"]
    for variable, value in settings.items():
        options += ["--env", f"{variable}={value}"]
    container = ServiceContainer(
        service, name, ClientTLS(ca_file=str(pki.ca_cert), cert_file=str(pki.client_cert),
                                 key_file=str(pki.client_key)),
        spec.grace_s, {"grpc": grpc_port, "metrics": metrics_port, "health": health_port})
    try:
        podman("run", "--detach", "--name", name, *options, image)
        yield container
    finally:
        podman("rm", "--force", "--ignore", "--time", "0", name)
        for volume in volumes:
            if exists("volume", volume):
                podman("volume", "rm", "--force", volume)
