"""Workers as an indexed Job in the trainer's namespace (RECSYS_TRAINER_LAUNCHER=kubernetes).

The pods come from the PodTemplate ``trainer-worker`` (manifests/base/trainer-workers.yaml:
the image, resources, security context and the snapshot store's keys, all set by kustomize
like any workload); the trainer adds what is per run: N completions, the run folder, and
torchrun's rendezvous on pod 0 (an indexed Job names its pods ``<job>-<index>``, and the
headless Service ``trainer-workers`` gives them DNS names). ``backoffLimit: 0``: the first
pod that fails fails the Job, and Kubernetes stops the others.

The trainer talks to the API server over HTTPS with its service account's projected token
(its Role allows Jobs and reading that one PodTemplate, nothing else).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from services.core.errors import Unavailable

POD_TEMPLATE = "trainer-worker"
SERVICE = "trainer-workers"  # headless: <job>-<index>.trainer-workers resolves to a pod
RENDEZVOUS_PORT = 29500
ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
API_SERVER = "https://kubernetes.default.svc"
# Finished Jobs (and their pods' logs) stay this long for a look, then Kubernetes removes them.
KEEP_FINISHED_S = 3600
_COMPLETION_INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def job_name(job_id: str) -> str:
    """The Job of a training job: a DNS label, with room for the pods' ``-<index>``."""
    return f"trainer-worker-{job_id}".lower()[:56]


def render_job(template: Mapping[str, Any], *, name: str, workers: int, run: str,
               environ: Mapping[str, str]) -> dict[str, Any]:
    """The indexed Job of `workers` pods made from PodTemplate `template` (its first
    container is the worker's); `environ` holds settings that are not secret."""
    pod = copy.deepcopy(dict(template["template"]))
    pod.setdefault("metadata", {}).setdefault("labels", {})["recsys.io/training-run"] = name
    spec = pod["spec"]
    spec["subdomain"] = SERVICE
    spec["restartPolicy"] = "Never"
    container = spec["containers"][0]
    container["command"] = ["python", "-m", "torch.distributed.run"]
    container["args"] = [
        "--nnodes", str(workers), "--nproc-per-node", "1", "--node-rank", "$(NODE_RANK)",
        "--master-addr", f"{name}-0.{SERVICE}", "--master-port", str(RENDEZVOUS_PORT),
        "--max-restarts", "0", "-m", "services.trainer.worker", run]
    container["env"] = [
        *container.get("env", []),
        {"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": _COMPLETION_INDEX}}},
        *({"name": key, "value": value} for key, value in sorted(environ.items()))]
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": dict(pod["metadata"]["labels"])},
        "spec": {"completionMode": "Indexed", "completions": workers, "parallelism": workers,
                 "backoffLimit": 0, "ttlSecondsAfterFinished": KEEP_FINISHED_S,
                 "template": pod},
    }


@dataclass(frozen=True)
class KubernetesApi:
    """The API server, as this pod's service account (a projected token, re-read per call:
    the kubelet rotates it)."""

    namespace: str
    server: str = API_SERVER
    account: Path = ACCOUNT
    timeout_s: float = 10.0

    @classmethod
    def in_cluster(cls) -> KubernetesApi:
        return cls(namespace=(ACCOUNT / "namespace").read_text().strip())

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None,
             ) -> dict[str, Any] | None:
        """The answer's JSON; None for 404. Unavailable for anything else that fails."""
        token = (self.account / "token").read_text().strip()
        try:
            response = requests.request(
                method, f"{self.server}{path}", json=body, timeout=self.timeout_s,
                headers={"Authorization": f"Bearer {token}"},
                verify=str(self.account / "ca.crt"))
        except requests.RequestException as exc:
            raise Unavailable(f"Kubernetes API {method} {path}: {exc}") from exc
        if response.status_code == 404:
            return None
        if not response.ok:
            raise Unavailable(f"Kubernetes API {method} {path}: {response.status_code} "
                              f"{response.text[:300]}")
        answer: dict[str, Any] = response.json()
        return answer

    def jobs(self) -> str:
        return f"/apis/batch/v1/namespaces/{self.namespace}/jobs"


class JobGroup:
    """The pods of one indexed Job, followed through the Job's status."""

    def __init__(self, api: KubernetesApi, name: str) -> None:
        self._api = api
        self._name = name

    def poll(self) -> str | None:
        job = self._api.call("GET", f"{self._api.jobs()}/{self._name}")
        if job is None:
            return f"the Job {self._name} was deleted"
        return _outcome(job)

    def stop(self) -> None:
        """Delete the Job and its pods unless it has finished (Kubernetes has stopped its
        pods then, and keeps it KEEP_FINISHED_S for its logs)."""
        job = self._api.call("GET", f"{self._api.jobs()}/{self._name}")
        if job is not None and _outcome(job) is None:
            self._api.call("DELETE", f"{self._api.jobs()}/{self._name}",
                           {"propagationPolicy": "Background"})


def _outcome(job: Mapping[str, Any]) -> str | None:
    """None while the Job runs; "" once it completed; else why it failed."""
    for condition in job.get("status", {}).get("conditions", []):
        if condition.get("status") != "True":
            continue
        if condition["type"] == "Complete":
            return ""
        if condition["type"] == "Failed":
            return (f"worker pods of the Job {job['metadata']['name']} failed "
                    f"({condition.get('reason')}: {condition.get('message')})")
    return None


class KubernetesLauncher:
    """Starts a run's workers as an indexed Job; `environ` reaches every pod."""

    def __init__(self, api: KubernetesApi, *, environ: Mapping[str, str]) -> None:
        self._api = api
        self._environ = dict(environ)

    def start(self, *, job_id: str, workers: int, run: str) -> JobGroup:
        api = self._api
        template = api.call("GET", f"/api/v1/namespaces/{api.namespace}/podtemplates/"
                                   f"{POD_TEMPLATE}")
        if template is None:
            raise Unavailable(f"no PodTemplate {POD_TEMPLATE} in namespace {api.namespace}: "
                              "the workers' pods are made from it")
        name = job_name(job_id)
        api.call("POST", api.jobs(), render_job(template, name=name, workers=workers, run=run,
                                                environ=self._environ))
        return JobGroup(api, name)
