"""podman as this project runs it: with its own containers.conf (next to this file), never the
machine's, so nothing has to be configured by hand."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import IO

CONTAINERS_CONF = Path(__file__).with_name("containers.conf")


class PodmanError(RuntimeError):
    """podman exited with an error; the message holds its command and output."""


def installed() -> bool:
    return shutil.which("podman") is not None


def env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def podman(*args: str, timeout: float = 120, stdin: IO[bytes] | None = None) -> str:
    """Run `podman args...`; its standard output, or a PodmanError with what it printed."""
    done = subprocess.run(["podman", *args], env=env(), stdin=stdin, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise PodmanError(f"podman {' '.join(args)} exited {done.returncode}:\n"
                          f"{done.stdout[-4000:]}{done.stderr[-4000:]}")
    return done.stdout


def exists(kind: str, name: str) -> bool:
    """Whether podman has the image, volume or container `name` (`kind`)."""
    return subprocess.run(["podman", kind, "exists", name], env=env(), check=False,
                          timeout=60).returncode == 0


def run(*args: str, timeout: float) -> None:
    """Run `podman args...` with its output on this terminal (a build's progress)."""
    done = subprocess.run(["podman", *args], env=env(), timeout=timeout, check=False)
    if done.returncode != 0:
        raise PodmanError(f"podman {' '.join(args[:2])} ... exited {done.returncode} (above)")
