"""Typed, frozen settings read from environment variables (12-factor).

Each service declares a frozen dataclass whose fields carry their variable name in
`metadata`; `load` converts and validates them once, in `main()`. Unknown variables under the
service's own prefix are rejected, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting is missing, malformed or out of range; the message is one line."""


def env(
    name: str,
    default: Any,
    doc: str,
    *,
    check: Callable[[Any], bool] | None = None,
    rule: str = "",
) -> Any:
    """A settings field bound to environment variable `name`.

    `check` validates the converted value; `rule` describes the valid range in errors.
    A dict default becomes a read-only mapping.
    """
    metadata = {"env": name, "doc": doc, "check": check, "rule": rule, "default": default}
    if isinstance(default, dict):
        frozen = types.MappingProxyType(dict(default))
        metadata["default"] = frozen
        return dataclasses.field(default_factory=lambda: frozen, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _convert(raw: str, kind: Any) -> Any:
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if kind in (int, float, str):
        return kind(raw.strip()) if kind is not str else raw
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        if raw not in typing.get_args(kind):
            raise ValueError(f"expected one of {', '.join(typing.get_args(kind))}")
        return raw
    if origin is tuple:
        (item_kind, _) = typing.get_args(kind)
        return tuple(_convert(part.strip(), item_kind) for part in raw.split(",")
                     if part.strip())
    if origin in (dict, Mapping):
        _, value_kind = typing.get_args(kind)
        pairs = (part.split("=", 1) for part in raw.split(",") if part.strip())
        return types.MappingProxyType({k.strip(): _convert(v, value_kind) for k, v in pairs})
    raise TypeError(f"unsupported settings type {kind!r}")


def load(cls: type[T], environ: Mapping[str, str] | None = None, *, prefix: str = "") -> T:
    """Build settings `cls` from `environ` (default os.environ); raise SettingsError.

    Variables that start with `prefix` but name no field are rejected as unknown.
    """
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    known: set[str] = set()
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        name = field.metadata["env"]
        known.add(name)
        if name in environ:
            try:
                values[field.name] = _convert(environ[name], hints[field.name])
            except ValueError as exc:
                reason = exc if field.repr else "not a valid value"  # exc may quote it
                raise SettingsError(f"{_shown(field, environ[name])}: {reason}") from None
        check = field.metadata["check"]
        value = values.get(field.name, field.metadata["default"])
        if check is not None and not check(value):
            raise SettingsError(f"{_shown(field, value)}: must be {field.metadata['rule']}")
    if prefix:
        unknown = sorted(k for k in environ if k.startswith(prefix) and k not in known)
        if unknown:
            raise SettingsError(f"unknown setting {unknown[0]} (known: {', '.join(sorted(known))})")
    return cls(**values)


def _shown(field: dataclasses.Field[Any], value: Any) -> str:
    """A setting as an error names it: with its value, unless the field is secret (left out
    of the repr, `services.core.config.secret`), whose value is never printed."""
    name = field.metadata["env"]
    return f"{name}={value!r}" if field.repr else f"{name} (secret, value not shown)"


def describe(cls: type) -> list[tuple[str, str, str]]:
    """(variable, default, description) for every field: the README's settings tables."""
    return [
        (f.metadata["env"], repr(f.metadata["default"]), f.metadata["doc"])
        for f in dataclasses.fields(cls)
    ]


def port(value: int) -> bool:
    """0 (any free port) to 65535."""
    return 0 <= value <= 65535


def positive(value: float) -> bool:
    return value > 0


def at_least_one(value: int) -> bool:
    return value >= 1


def non_negative(value: float) -> bool:
    return math.isfinite(value) and value >= 0
