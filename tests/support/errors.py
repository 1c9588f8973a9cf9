"""The project's exceptions as test cases: every RecsysError subclass, found recursively, so a
new one is covered by each test that maps errors to statuses without anyone listing it."""

from __future__ import annotations

import inspect

from services.core.errors import RecsysError


def recsys_errors() -> list[type[RecsysError]]:
    """Every subclass of RecsysError, depth first, in definition order."""
    found: list[type[RecsysError]] = []

    def add(parent: type[RecsysError]) -> None:
        for child in parent.__subclasses__():
            found.append(child)
            add(child)

    add(RecsysError)
    return found


def example(error: type[RecsysError]) -> RecsysError:
    """An instance of `error`, each required argument a text naming the class and argument
    (InvalidArgument: "InvalidArgument field: InvalidArgument reason")."""
    required = [p for p in inspect.signature(error).parameters.values()
                if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
    return error(*(f"{error.__name__} {p.name}" for p in required))
