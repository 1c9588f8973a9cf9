"""The entry point shape every `python -m services.<name>` shares."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import TypeVar

from prometheus_client import CollectorRegistry

from services.core import logging as recsys_logging
from services.core import server
from services.core.config import ServerSettings
from services.core.settings import SettingsError, load

S = TypeVar("S", bound=ServerSettings)


def run(
    settings_cls: type[S], prefix: str, make_app: Callable[[S, CollectorRegistry], server.App]
) -> None:
    """Load settings (a bad one exits 2 with a one-line reason), then serve until signalled.

    `make_app` gets the settings and the registry to put the service's domain metrics on.
    """
    try:
        settings = load(settings_cls, prefix=prefix)
        settings.validate()  # e.g. certificate files, before anything starts
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    recsys_logging.configure(settings.log_level, settings.log_format)

    async def main() -> None:
        registry = CollectorRegistry()
        await server.serve(make_app(settings, registry), settings, registry)

    asyncio.run(main())
