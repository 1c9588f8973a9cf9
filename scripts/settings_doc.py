"""Print the settings of every service as Markdown tables (the README's "Settings" section).

    .venv/bin/python scripts/settings_doc.py
"""

from __future__ import annotations

import importlib

from services.core.config import ServerSettings
from services.core.settings import describe

# (title, "module:SettingsClass")
SERVICES = [
    ("IngestService", "services.ingest.settings:IngestSettings"),
    ("TrainerService", "services.trainer.settings:TrainerSettings"),
    ("RecommenderService", "services.recommender.settings:RecommenderSettings"),
]


def table(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | `{default}` | {doc} |" for name, default, doc in rows]
    return "\n".join(lines)


def main() -> None:
    shared = describe(ServerSettings)
    shared_names = {name for name, _, _ in shared}
    print("Every service:\n")
    print(table(shared))
    for title, path in SERVICES:
        module, _, name = path.partition(":")
        rows = describe(getattr(importlib.import_module(module), name))
        print(f"\n{title}:\n")
        print(table([row for row in rows if row[0] not in shared_names]))


if __name__ == "__main__":
    main()
