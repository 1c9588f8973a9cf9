"""`python -m services.ingest`: serve IngestService with settings from the environment."""

from __future__ import annotations

from services.core.main import run
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings


def main() -> None:
    run(IngestSettings, "RECSYS_INGEST_", IngestApp)


if __name__ == "__main__":
    main()
