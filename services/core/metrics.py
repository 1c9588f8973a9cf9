"""The standard gRPC server metrics (the grpc-ecosystem/go-grpc-prometheus names)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
_LABELS = ("grpc_type", "grpc_service", "grpc_method")


@dataclass(frozen=True)
class GrpcServerMetrics:
    started: Counter
    handled: Counter
    handling_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> GrpcServerMetrics:
        return cls(
            started=Counter(
                "grpc_server_started_total", "RPCs started on the server.", _LABELS,
                registry=registry,
            ),
            handled=Counter(
                "grpc_server_handled_total", "RPCs completed on the server, by status code.",
                (*_LABELS, "grpc_code"), registry=registry,
            ),
            handling_seconds=Histogram(
                "grpc_server_handling_seconds",
                "Time from the start of an RPC to its status, in seconds.",
                _LABELS, buckets=LATENCY_BUCKETS, registry=registry,
            ),
        )
