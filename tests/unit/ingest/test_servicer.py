from __future__ import annotations

from recsys.ingest.v1 import ingest_pb2, ingest_pb2_grpc
from services.ingest.servicer import SERVICE, IngestServicer


def test_every_rpc_in_the_contract_is_implemented() -> None:
    service = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"]
    assert service.full_name == SERVICE
    generated = ingest_pb2_grpc.IngestServiceServicer
    missing = [m.name for m in service.methods
               if getattr(IngestServicer, m.name) is getattr(generated, m.name)]
    assert not missing
