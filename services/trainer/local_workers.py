"""Workers as processes on the trainer's machine: N worker processes in a process group of
their own, meeting through a file (torch.distributed's FileStore), gloo bound to loopback.

Not torchrun: its rendezvous store (c10d's TCPStore) names every connection it makes by a
reverse DNS lookup of the peer's address (``::ffff:127.0.0.1`` even for 127.0.0.1), and that
lookup goes to the machine's name server: off loopback, where nothing the project runs may
send traffic. A file rendezvous makes no connection; gloo's own connections stay on `lo`
(GLOO_SOCKET_IFNAME). What torchrun would add here, stopping the group when one worker
dies, `LocalGroup` does. Across machines (Kubernetes) the workers start under torchrun.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import services

# What the workers get to stop on SIGTERM before they are killed.
STOP_GRACE_S = 10.0
# The worker's rendezvous (an init_method of torch.distributed); unset: env://, as torchrun
# sets it up.
RENDEZVOUS_ENV = "RECSYS_WORKER_RENDEZVOUS"


class LocalGroup:
    """The worker processes of one run, in one process group (the first worker leads it)."""

    def __init__(self, processes: list[subprocess.Popen[bytes]], log: Path) -> None:
        self._processes = processes
        self._log = log

    def poll(self) -> str | None:
        codes = [process.poll() for process in self._processes]
        for rank, code in enumerate(codes):
            if code:
                how = f"exit code {code}"
                if code < 0:
                    how += f", {signal.Signals(-code).name}"
                return (f"worker {rank} of {len(codes)} failed ({how}); the workers' log: "
                        f"{self._log}")
        return "" if all(code == 0 for code in codes) else None

    def stop(self) -> None:
        running = [p for p in self._processes if p.poll() is None]
        if not running:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._processes[0].pid, signal.SIGTERM)
        for process in running:
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class LocalLauncher:
    """Starts `workers` x `python -m services.trainer.worker RUN`, with the object store's
    settings in `environ`; their output and rendezvous file go to `work_dir`."""

    def __init__(self, *, environ: Mapping[str, str], work_dir: Path) -> None:
        self._environ = dict(environ)
        self._work_dir = work_dir

    def start(self, *, job_id: str, workers: int, run: str) -> LocalGroup:
        self._work_dir.mkdir(parents=True, exist_ok=True)
        log = self._work_dir / f"{job_id}.log"
        rendezvous = self._work_dir / f"{job_id}.rendezvous"
        rendezvous.unlink(missing_ok=True)  # an earlier try's: the file must start empty
        # The workers import this very checkout, whatever the trainer was started from.
        source = str(Path(services.__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
        environ = {**os.environ, **self._environ, "PYTHONPATH": path, "GLOO_SOCKET_IFNAME": "lo",
                   "WORLD_SIZE": str(workers), RENDEZVOUS_ENV: f"file://{rendezvous}",
                   # The workers share this machine's cores: torch's default thread count
                   # (and so a fit's solver threads, unless RECSYS_TRAINER_THREADS sets them)
                   # is their share, not all of them each.
                   "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}
        command = [sys.executable, "-m", "services.trainer.worker", run]
        processes: list[subprocess.Popen[bytes]] = []
        with log.open("wb") as output:
            for rank in range(workers):
                processes.append(subprocess.Popen(
                    command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    # One process group, led by worker 0: stop() signals them together.
                    process_group=processes[0].pid if processes else 0,
                    env={**environ, "RANK": str(rank), "LOCAL_RANK": str(rank)}))
        return LocalGroup(processes, log)
