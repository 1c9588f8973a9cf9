"""The descriptor set of the contracts, which the transcoder reads to map REST to gRPC."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2

from services.core.names import ALL_SERVICE_NAMES

# Generated with the code (scripts/gen_protos.py); the Kubernetes render mounts a copy.
DESCRIPTOR = Path(__file__).resolve().parents[2] / "gen" / "descriptor" / "recsys.binpb"


def streaming_methods(descriptor: Path = DESCRIPTOR) -> list[str]:
    """gRPC paths of every client- or server-streaming method of the routed services."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file
    return sorted(
        f"/{file.package}.{service.name}/{method.name}"
        for file in files
        for service in file.service
        if f"{file.package}.{service.name}" in ALL_SERVICE_NAMES.values()
        for method in service.method
        if method.client_streaming or method.server_streaming
    )
