"""Every RPC in the contracts is implemented, and every unary RPC has a REST face."""

from __future__ import annotations

import importlib

import pytest
from google.api import annotations_pb2
from google.protobuf.descriptor import ServiceDescriptor

from recsys.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from recsys.recommender.v1 import recommender_pb2, recommender_pb2_grpc
from recsys.trainer.v1 import trainer_pb2, trainer_pb2_grpc

# (service descriptor, generated base servicer, our servicer as "module:Class")
SERVICES = [
    (ingest_pb2.DESCRIPTOR.services_by_name["IngestService"],
     ingest_pb2_grpc.IngestServiceServicer, "services.ingest.servicer:IngestServicer"),
    (trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"],
     trainer_pb2_grpc.TrainerServiceServicer, "services.trainer.servicer:TrainerServicer"),
    (recommender_pb2.DESCRIPTOR.services_by_name["RecommenderService"],
     recommender_pb2_grpc.RecommenderServiceServicer,
     "services.recommender.servicer:RecommenderServicer"),
]

each_service = pytest.mark.parametrize(
    ("service", "base", "path"), SERVICES, ids=[s.name for s, _, _ in SERVICES]
)


@each_service
def test_every_rpc_is_implemented(service: ServiceDescriptor, base: type, path: str) -> None:
    module, _, name = path.partition(":")
    servicer = getattr(importlib.import_module(module), name)
    assert issubclass(servicer, base)
    missing = [
        m.name for m in service.methods if getattr(servicer, m.name) is getattr(base, m.name)
    ]
    assert not missing, f"{service.full_name} does not implement {missing}"


@each_service
def test_unary_rpcs_have_rest_and_streaming_ones_do_not(
    service: ServiceDescriptor, base: type, path: str
) -> None:
    for method in service.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        streaming = method.client_streaming or method.server_streaming
        assert bool(rule.ListFields()) != streaming, method.full_name
