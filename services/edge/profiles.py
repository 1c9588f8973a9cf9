"""The renders the project ships or runs: local, Compose and Kubernetes.

Port 9901 answers /stats/prometheus and /ready in each: locally it is the admin endpoint
itself (loopback); in Kubernetes the admin endpoint moves to the pod's loopback at 9900 and
9901 is the stats listener that kubelet and Prometheus reach. The Kubernetes upstreams are the
headless Services of manifests/base, the ConfigMap is mounted at /etc/envoy, and the Ingress
in front is one trusted X-Forwarded-For hop. docker-compose.yml runs the Kubernetes layout
with the local PKI and plaintext upstreams. The local render reads the local stack's PKI
(.local/pki, `python -m scripts.localstack.pki`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from services.edge.blocks import LOOPBACK
from services.edge.descriptor import DESCRIPTOR
from services.edge.policy import DEFAULT_POLICIES, EdgeSecurity, RoutePolicy, TlsFiles
from services.edge.render import render_envoy_config


@dataclass(frozen=True, kw_only=True)
class Profile:
    """Where one Envoy listens, where its upstreams are, and which files it reads (the
    arguments of `render_envoy_config`)."""

    listen_port: int
    admin_port: int
    ingest: str
    trainer: str
    recommender: str
    descriptor_path: str
    listen_address: str = LOOPBACK
    stats_port: int | None = None
    trusted_hops: int = 0
    security: EdgeSecurity | None = None

    def render(self) -> str:
        return render_envoy_config(**{f.name: getattr(self, f.name) for f in fields(self)})


def pki_security(directory: Path | str, *, mutual_tls: bool = False,
                 policies: Mapping[str, RoutePolicy] = DEFAULT_POLICIES) -> EdgeSecurity:
    """Security from a folder laid out as the local PKI writes it (scripts/localstack/pki.py):
    the server certificate on the listener, its JWKS, and with `mutual_tls` Envoy's client
    certificate and the CA towards the services."""
    folder = Path(directory)
    upstream = TlsFiles(cert=str(folder / "envoy-client.crt"),
                        key=str(folder / "envoy-client.key"),
                        ca=str(folder / "ca.crt")) if mutual_tls else None
    return EdgeSecurity(
        listener_tls=TlsFiles(cert=str(folder / "server.crt"), key=str(folder / "server.key")),
        jwks=str(folder / "jwks.json"), upstream_tls=upstream, policies=policies)


LOCAL_PKI = Path(__file__).resolve().parents[2] / ".local" / "pki"
LOCAL = Profile(listen_port=8080, admin_port=9901, ingest=f"{LOOPBACK}:50051",
                trainer=f"{LOOPBACK}:50052", recommender=f"{LOOPBACK}:50053",
                descriptor_path=str(DESCRIPTOR), security=pki_security(LOCAL_PKI))

# In Kubernetes, Envoy reads its certificates and the JWKS from Secrets mounted beside (not
# inside) the ConfigMap at /etc/envoy, in cert-manager's layout (tls.crt, tls.key, ca.crt):
#   /etc/envoy-tls/         the listener's certificate (Secret envoy-tls)
#   /etc/envoy-client-tls/  Envoy's client certificate for the services, and their CA
#                           (Secret envoy-client-tls)
#   /etc/envoy-jwks/        jwks.json, the public keys tokens are verified against
#                           (Secret or ConfigMap envoy-jwks)
K8S_SECURITY = EdgeSecurity(
    listener_tls=TlsFiles(cert="/etc/envoy-tls/tls.crt", key="/etc/envoy-tls/tls.key"),
    jwks="/etc/envoy-jwks/jwks.json",
    upstream_tls=TlsFiles(cert="/etc/envoy-client-tls/tls.crt",
                          key="/etc/envoy-client-tls/tls.key",
                          ca="/etc/envoy-client-tls/ca.crt"),
)
K8S = Profile(listen_port=8080, admin_port=9900, stats_port=9901, listen_address="0.0.0.0",
              trusted_hops=1, ingest="ingest:50051", trainer="trainer:50052",
              recommender="recommender:50053", descriptor_path="/etc/envoy/recsys.binpb",
              security=K8S_SECURITY)

# docker-compose.yml mounts Envoy's files of .local/pki (its certificate, key and the JWKS) at
# /etc/recsys-pki; the services behind speak plaintext on the Compose network, and nothing in
# front appends to X-Forwarded-For. With docker-compose.mtls.yml they speak mutual TLS, and
# Envoy also gets its client certificate and the CA.
COMPOSE_PKI = "/etc/recsys-pki"
COMPOSE = replace(K8S, trusted_hops=0, security=pki_security(COMPOSE_PKI))
COMPOSE_MTLS = replace(COMPOSE, security=pki_security(COMPOSE_PKI, mutual_tls=True))
