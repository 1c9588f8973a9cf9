"""The build itself: a context makes only its own service's image."""

from __future__ import annotations

import pytest

from scripts.images.build import build_options, default_base
from scripts.images.context import assemble
from scripts.images.podman import PodmanError, podman

pytestmark = pytest.mark.images


def test_a_build_refuses_a_service_its_context_does_not_hold(images: dict[str, str]) -> None:
    # `images`: the layers before the check are cached, so the build stops within seconds.
    context = assemble("recommender")
    with pytest.raises(PodmanError) as refused:
        podman("build", *build_options("trainer", base_image=default_base()), str(context),
               timeout=600)
    assert "SERVICE=trainer: this build context has no services/trainer" in str(refused.value)
