from __future__ import annotations

from collections.abc import Mapping
from dataclasses import FrozenInstanceError, dataclass

import pytest

from services.core.config import ServerSettings, secret
from services.core.settings import SettingsError, env, load, positive


@dataclass(frozen=True, kw_only=True)
class DemoSettings(ServerSettings):
    batch: int = env("RECSYS_DEMO_BATCH", 1000, "Events per batch.", check=positive, rule="> 0")
    weights: Mapping[str, float] = env("RECSYS_DEMO_WEIGHTS", {}, "Weights by type.")
    topics: tuple[str, ...] = env("RECSYS_DEMO_TOPICS", ("a",), "Topics.")
    enabled: bool = env("RECSYS_DEMO_ENABLED", False, "Switch.")


def test_defaults_when_nothing_is_set() -> None:
    settings = load(DemoSettings, {}, prefix="RECSYS_DEMO_")
    assert settings.batch == 1000
    assert settings.grpc_port == 0
    assert settings.host == "127.0.0.1"


def test_values_are_converted_to_their_types() -> None:
    settings = load(DemoSettings, {
        "RECSYS_DEMO_BATCH": "50",
        "RECSYS_DEMO_WEIGHTS": "view=1, purchase=4.5",
        "RECSYS_DEMO_TOPICS": "x,y",
        "RECSYS_DEMO_ENABLED": "yes",
        "RECSYS_GRPC_PORT": "50051",
        "RECSYS_LOG_FORMAT": "json",
    }, prefix="RECSYS_DEMO_")
    assert settings.batch == 50
    assert dict(settings.weights) == {"view": 1.0, "purchase": 4.5}
    assert settings.topics == ("x", "y")
    assert settings.enabled is True
    assert settings.grpc_port == 50051
    assert settings.log_format == "json"


def test_settings_are_frozen() -> None:
    settings = load(DemoSettings, {})
    with pytest.raises(FrozenInstanceError):
        settings.batch = 2  # type: ignore[misc]


@pytest.mark.parametrize(("environ", "message"), [
    ({"RECSYS_DEMO_BATCH": "many"}, "RECSYS_DEMO_BATCH='many'"),
    ({"RECSYS_DEMO_BATCH": "0"}, "RECSYS_DEMO_BATCH=0: must be > 0"),
    ({"RECSYS_GRPC_PORT": "70000"}, "RECSYS_GRPC_PORT=70000: must be 0 to 65535"),
    ({"RECSYS_LOG_FORMAT": "xml"}, "expected one of auto, json, text"),
    ({"RECSYS_DEMO_ENABLED": "maybe"}, "expected true or false"),
    ({"RECSYS_DEMO_BATHC": "5"}, "unknown setting RECSYS_DEMO_BATHC"),
])
def test_bad_settings_fail_with_a_one_line_reason(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(DemoSettings, environ, prefix="RECSYS_DEMO_")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_other_services_variables_are_not_rejected() -> None:
    settings = load(DemoSettings, {"RECSYS_OTHER_THING": "1"}, prefix="RECSYS_DEMO_")
    assert settings.batch == 1000



@dataclass(frozen=True, kw_only=True)
class SecretSettings:
    url: str = secret(env("RECSYS_DEMO_URL", "redis://x", "A URL with a password.",
                          check=lambda value: value.startswith("redis://"), rule="redis://"))
    retries: int = secret(env("RECSYS_DEMO_TOKEN_RETRIES", 1, "A secret number."))


@pytest.mark.parametrize("environ", [
    {"RECSYS_DEMO_URL": "http://:hunter2@redis:6379/0"},  # fails its check
    {"RECSYS_DEMO_TOKEN_RETRIES": "hunter2"},  # fails its conversion
])
def test_a_secret_is_never_in_a_settings_error(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as raised:
        load(SecretSettings, environ)
    assert "hunter2" not in str(raised.value)
    assert str(raised.value).startswith(f"{next(iter(environ))} (secret, value not shown)")
