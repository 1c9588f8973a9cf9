"""The worker processes of a distributed fit, found the way `ps` finds them: in /proc, by their
command line (``-m services.trainer.worker runs/<job_id>``) and their RANK variable."""

from __future__ import annotations

from pathlib import Path


def worker_pids(job_id: str) -> dict[int, int]:
    """Rank -> pid of the running workers of `job_id`'s run (none once they all ended)."""
    found: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"services.trainer.worker" not in argv or f"runs/{job_id}".encode() not in argv:
                continue
            environ = dict(entry.split(b"=", 1) for entry in
                           (proc / "environ").read_bytes().split(b"\0") if b"=" in entry)
        except OSError:  # it ended meanwhile
            continue
        if b"RANK" in environ:
            found[int(environ[b"RANK"])] = int(proc.name)
    return found
