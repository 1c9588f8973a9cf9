"""The README's "Settings" section, generated from the settings classes.

    .venv/bin/python scripts/settings_doc.py           # print the tables
    .venv/bin/python scripts/settings_doc.py --write   # replace them in README.md
    .venv/bin/python scripts/settings_doc.py --check   # exit 1 when README.md is stale
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from services.core.config import ServerSettings
from services.core.settings import describe

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- settings:begin -->", "<!-- settings:end -->"

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


def render() -> str:
    shared = describe(ServerSettings)
    shared_names = {name for name, _, _ in shared}
    parts = ["Every service:\n", table(shared)]
    for title, path in SERVICES:
        module, _, name = path.partition(":")
        rows = describe(getattr(importlib.import_module(module), name))
        parts += [f"\n{title}:\n", table([row for row in rows if row[0] not in shared_names])]
    return "\n".join(parts)


def with_settings(readme: str) -> str:
    """`readme` with the text between the settings markers replaced by `render()`."""
    head, found, rest = readme.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise SystemExit(f"README.md lacks the {BEGIN} ... {END} markers")
    return f"{head}{BEGIN}\n{render()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="update README.md in place")
    mode.add_argument("--check", action="store_true", help="fail when README.md is stale")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(render())
        return 0
    current = README.read_text()
    wanted = with_settings(current)
    if args.write:
        README.write_text(wanted)
        return 0
    if wanted != current:
        print("README.md's settings are stale: run scripts/settings_doc.py --write",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
