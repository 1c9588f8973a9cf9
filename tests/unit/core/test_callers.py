"""Who may call what with mutual TLS: the allow-list per method group, and the caller's name."""

from __future__ import annotations

from services.core.callers import ANONYMOUS, Caller, CallerPolicy
from services.core.names import ADMIN_METHODS, SERVICE_NAMES

POLICY = CallerPolicy.of(callers=["envoy", "recsys-admin", "loader"],
                         admins=["envoy", "recsys-admin"], edge=["envoy"])
PROMOTE = f"/{SERVICE_NAMES['trainer']}/PromoteModelVersion"
RECOMMEND = f"/{SERVICE_NAMES['recommender']}/Recommend"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def test_admin_methods_are_the_trainers_commands() -> None:
    trainer = SERVICE_NAMES["trainer"]
    assert {f"/{trainer}/StartTrainingJob", f"/{trainer}/CancelTrainingJob",
                             f"/{trainer}/PromoteModelVersion"} == ADMIN_METHODS


def test_each_method_group_has_its_own_callers() -> None:
    assert POLICY.permits(PROMOTE, ["envoy"])
    assert POLICY.permits(PROMOTE, ["recsys-admin"])
    assert not POLICY.permits(PROMOTE, ["loader"])  # a caller, not an admin
    assert POLICY.permits(RECOMMEND, ["loader"])
    assert POLICY.permits(REFLECTION, ["loader"])
    for method in (PROMOTE, RECOMMEND, REFLECTION):
        assert not POLICY.permits(method, ["recommender", "trainer"])
        assert not POLICY.permits(method, [])


def test_health_is_open_to_every_certificate_of_the_ca() -> None:
    assert POLICY.permits("/grpc.health.v1.Health/Check", ["recommender"])


def test_only_the_edge_speaks_for_an_end_user() -> None:
    assert POLICY.caller(["envoy"], "alice") == Caller(peer="envoy", subject="alice")
    assert str(POLICY.caller(["envoy"], "alice")) == "alice via envoy"
    assert POLICY.caller(["recsys-admin"], "alice") == Caller(peer="recsys-admin")
    assert POLICY.caller(["envoy"], None) == Caller(peer="envoy")
    assert POLICY.caller([], "alice") is ANONYMOUS
    assert str(ANONYMOUS) == "anonymous"
