"""Every RPC in the contracts is implemented by its service's servicer, and every unary RPC has
a REST face: once for each service of the mesh (services.core.names), those that share another
service's server (`services.<server>.<name>_servicer`) included."""

from __future__ import annotations

import importlib

import pytest
from google.api import annotations_pb2
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import ServiceDescriptor

from services.core.names import ALL_SERVICE_NAMES, server_of

each_service = pytest.mark.parametrize("name", list(ALL_SERVICE_NAMES))


def descriptor(name: str) -> ServiceDescriptor:
    return descriptor_pool.Default().FindServiceByName(ALL_SERVICE_NAMES[name])


def servicer_module(name: str) -> str:
    server = server_of(name)
    return f"services.{server}.servicer" if server == name else f"services.{server}.{name}_servicer"


def generated_base(service: ServiceDescriptor) -> type:
    """The servicer base class protoc generated for `service` (every method UNIMPLEMENTED)."""
    module = importlib.import_module(
        service.file.name.removesuffix(".proto").replace("/", ".") + "_pb2_grpc")
    base: type = getattr(module, f"{service.name}Servicer")
    return base


@each_service
def test_every_rpc_is_implemented(name: str) -> None:
    service = descriptor(name)
    base = generated_base(service)
    module = importlib.import_module(servicer_module(name))
    servicers = [value for value in vars(module).values()
                 if isinstance(value, type) and issubclass(value, base) and value is not base]
    assert len(servicers) == 1, f"{module.__name__}: one {base.__name__}, not {servicers}"
    servicer = servicers[0]
    # The module names the service it serves (health and bindings use that name) as the
    # descriptors do.
    assert {value for key, value in vars(module).items()
            if key in ("SERVICE", "SERVICE_NAME")} == {service.full_name}
    missing = [m.name for m in service.methods
               if getattr(servicer, m.name) is getattr(base, m.name)]
    assert not missing, f"{service.full_name} does not implement {missing}"


@each_service
def test_unary_rpcs_have_rest_and_streaming_ones_do_not(name: str) -> None:
    for method in descriptor(name).methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        streaming = method.client_streaming or method.server_streaming
        assert bool(rule.ListFields()) != streaming, method.full_name
