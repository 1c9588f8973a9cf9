"""The small pieces every part of the Envoy configuration is built from."""

from __future__ import annotations

from typing import Any

from services.edge.policy import TlsFiles

# The admin endpoint, and every local listener and upstream, bind loopback only.
LOOPBACK = "127.0.0.1"


def typed(type_name: str, **fields: Any) -> dict[str, Any]:
    """A `typed_config` (a google.protobuf.Any) of Envoy's API type `type_name`."""
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": typed("envoy.extensions.filters.http.router.v3.Router")}


def socket(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def tls_context(files: TlsFiles, *, alpn: list[str],
                peer_names: list[str] | None = None) -> dict[str, Any]:
    """A common TLS context: our certificate, and with a CA, the peer's checked against it
    (and against `peer_names`, DNS SANs)."""
    context: dict[str, Any] = {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2"},
        "tls_certificates": [{"certificate_chain": {"filename": files.cert},
                              "private_key": {"filename": files.key}}],
        "alpn_protocols": alpn,
    }
    if files.ca is not None:
        validation: dict[str, Any] = {"trusted_ca": {"filename": files.ca}}
        if peer_names:
            validation["match_typed_subject_alt_names"] = [
                {"san_type": "DNS", "matcher": {"exact": name}} for name in peer_names]
        context["validation_context"] = validation
    return context


def tls_socket(context_type: str, common: dict[str, Any], **options: Any) -> dict[str, Any]:
    """A TLS transport socket; `context_type` is the Downstream or Upstream TLS context."""
    return {"name": "envoy.transport_sockets.tls",
            "typed_config": typed(context_type, common_tls_context=common, **options)}
