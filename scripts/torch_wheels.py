"""Where pip finds torch's CPU build, which PyPI does not have (PyPI's torch is a
multi-gigabyte CUDA build): a wheel on this machine's disk when pip's configuration points at
one (machines of this project's kind keep it in a find-links folder and cannot reach PyTorch's
index), else PyTorch's CPU index. The lock files pin the CPU build (`torch==X+cpu`) with its
hash, so either source gives the same bytes or none.

    python -m scripts.torch_wheels [VERSION]   # the pip (and uv) options that add the source,
                                               # one a line; VERSION: requirements/all.txt's

scripts/setup.sh and scripts/lock.sh pass those options on; scripts/images mounts the folder
into the build.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parents[1]
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
LOCK = REPO / "requirements" / "all.txt"


def pinned_version(lock: Path = LOCK) -> str:
    """torch's version in a lock file, e.g. 2.13.0+cpu."""
    found = re.search(r"^torch==(\S+)", lock.read_text(), re.MULTILINE)
    if not found:
        raise ValueError(f"{lock} pins no torch")
    return found[1]


def local_wheel(version: str) -> Path | None:
    """The wheel pip would install for torch==`version` without any index (from its
    find-links), or None."""
    answer = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
         "--no-index", "--quiet", "--report", "-", f"torch=={version}"],
        capture_output=True, text=True, timeout=120, check=False)
    if answer.returncode != 0:
        return None
    url = json.loads(answer.stdout)["install"][0]["download_info"]["url"]
    return Path(unquote(urlparse(url).path))


def pip_options(version: str) -> list[str]:
    wheel = local_wheel(version)
    if wheel:
        return ["--find-links", str(wheel.parent)]
    return ["--extra-index-url", CPU_INDEX]


if __name__ == "__main__":
    print(*pip_options(sys.argv[1] if len(sys.argv) > 1 else pinned_version()), sep="\n")
