"""The error cases come from the hierarchy itself: a subclass at any depth is found, and each
gets an example whose message names it."""

from __future__ import annotations

from services.core.errors import InvalidArgument, NotFound, RecsysError
from tests.support.errors import example, recsys_errors


def test_every_subclass_is_found_at_any_depth() -> None:
    class UserNotFound(NotFound):  # as a service might add
        pass

    found = recsys_errors()
    assert {InvalidArgument, NotFound, UserNotFound} <= set(found)
    assert RecsysError not in found
    assert found.index(NotFound) < found.index(UserNotFound)


def test_each_example_names_its_class() -> None:
    assert example(InvalidArgument).message == "InvalidArgument field: InvalidArgument reason"
    for error in recsys_errors():
        instance = example(error)
        assert isinstance(instance, error) and error.__name__ in instance.message
