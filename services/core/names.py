"""The mesh's gRPC services: each one's short name and its full name in the contracts.

The short name is the service's name everywhere outside protobuf (its package, process,
Kubernetes Deployment and Service, Envoy cluster, Prometheus job); the full name is what gRPC,
grpc.health.v1, reflection and the `grpc_service` metric label use. Full names come from the
generated descriptors, so a renamed proto service cannot leave a stale copy behind.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from recsys.ingest.v1 import ingest_pb2
from recsys.recommender.v1 import recommender_pb2
from recsys.trainer.v1 import trainer_pb2

# Short name → full gRPC service name, in the mesh's data-flow order.
SERVICE_NAMES: Mapping[str, str] = MappingProxyType({
    "ingest": ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name,
    "trainer": trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name,
    "recommender": recommender_pb2.DESCRIPTOR.services_by_name["RecommenderService"].full_name,
})

# The RPCs that change what is trained or served: only admin identities may call them
# (services.core.callers); the edge asks for the `admin` scope on every TrainerService route.
_TRAINER = SERVICE_NAMES["trainer"]
ADMIN_METHODS: frozenset[str] = frozenset(
    f"/{_TRAINER}/{method}"
    for method in ("StartTrainingJob", "CancelTrainingJob", "PromoteModelVersion"))
