"""Workers as processes on the trainer's machine: one torchrun, N worker processes.

torchrun rendezvous on 127.0.0.1 (a static rendezvous on a free port) and gloo bound to the
loopback interface: left to itself, gloo may pick another interface, and nothing here may
send traffic beyond loopback. With `--max-restarts 0` a worker that dies ends the group:
torchrun stops the others and exits non-zero, naming the first failure (its "root cause").
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import services

# What the group gets to stop on SIGTERM (torchrun passes it on) before it is killed.
STOP_GRACE_S = 10.0
# torchrun's summary of a failed group: the first worker that failed, and how.
_ROOT_CAUSE = re.compile(
    r"Root Cause.*?rank\s*:\s*(?P<rank>\d+).*?exitcode\s*:\s*(?P<code>-?\d+)(?P<line>[^\n]*)",
    re.DOTALL)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class TorchrunGroup:
    """One torchrun and its workers, in a process group of their own."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path, workers: int) -> None:
        self._process = process
        self._log = log
        self._workers = workers

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self) -> str | None:
        code = self._process.poll()
        if code is None:
            return None
        return "" if code == 0 else self._why(code)

    def _why(self, code: int) -> str:
        text = self._log.read_text(errors="replace") if self._log.exists() else ""
        cause = _ROOT_CAUSE.search(text)
        if cause is None:
            return f"torchrun exited with code {code} (the workers' log: {self._log})"
        signal_name = re.search(r"\((SIG\w+)\)", cause["line"])
        how = f"exit code {cause['code']}" + (f", {signal_name[1]}" if signal_name else "")
        return (f"worker {cause['rank']} of {self._workers} failed ({how}); the workers' log: "
                f"{self._log}")

    def stop(self) -> None:
        if self._process.poll() is not None:
            return  # torchrun stops its workers before it exits
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()


class TorchrunLauncher:
    """Starts `python -m torch.distributed.run ... -m services.trainer.worker RUN`, with the
    object store's settings in `environ` and its output in `log_dir`/<job_id>.log."""

    def __init__(self, *, environ: Mapping[str, str], log_dir: Path) -> None:
        self._environ = dict(environ)
        self._log_dir = log_dir

    def start(self, *, job_id: str, workers: int, run: str) -> TorchrunGroup:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log = self._log_dir / f"{job_id}.log"
        # The workers import this very checkout, whatever the trainer was started from.
        source = str(Path(services.__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                   "--nproc-per-node", str(workers), "--master-addr", "127.0.0.1",
                   "--master-port", str(_free_port()), "--max-restarts", "0",
                   "-m", "services.trainer.worker", run]
        with log.open("wb") as output:
            process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # stop() signals torchrun and its workers together
                env={**os.environ, **self._environ, "PYTHONPATH": path,
                     "GLOO_SOCKET_IFNAME": "lo"})
        return TorchrunGroup(process, log, workers)
