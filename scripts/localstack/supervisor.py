"""The local stack under supervisord (PyPI `supervisor`), which keeps it running the way
Kubernetes keeps pods running.

    config = write_config(stack, programs)            # <state>/supervisord.conf
    subprocess.Popen(supervisord_argv(stack.state_dir), start_new_session=True)
    control = Supervisor(stack.state_dir)             # XML-RPC on <state>/supervisor.sock

Each component and service is a program, started in `priority` order (storage, broker, Redis,
MLflow, Prometheus, the services, Envoy) and stopped in the reverse one. A program that exits
is started again at once while the others keep running; one that dies again while starting
waits 1 s, then 2 s, 3 s... (supervisord's backoff) before each new try. Each restart is
counted in <state>/restarts.json and logged in <state>/logs/restarts.log
(`scripts/localstack/restarts.py`); supervisord's own events are in <state>/stack.log, each
program's output in <state>/logs/<name>.log. A stop is SIGTERM to the program's process group,
then SIGKILL once its `stop_wait_s` are up: the services get their whole drain.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import xmlrpc.client
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.localstack.components import VENV_BIN, write_private
from scripts.localstack.procfile import ROOT, LocalStack, procfile_line

#: Seconds a program must stay up to count as started (a quicker exit is a failed start).
START_S = 2
#: Failed starts in a row before supervisord gives a program up.
START_RETRIES = 30
#: Environment shared by every program; a component's own variables stay in its line.
SHARED_ENV = {
    "PYTHONUNBUFFERED": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_PROXY": "127.0.0.1,localhost",
}


@dataclass(frozen=True)
class Program:
    """One supervised process: its name, its shell line (`cd … && exec …`), when it starts
    relative to the others (lower first), and how long a stop may take before SIGKILL."""

    name: str
    line: str
    priority: int
    stop_wait_s: int = 10


def component_programs(stack: LocalStack) -> list[Program]:
    """The stack's components, in start order."""
    return [Program(component.name, procfile_line(component), priority=10 * (i + 1))
            for i, component in enumerate(stack.components)]


def config_text(stack: LocalStack, programs: Iterable[Program], *,
                env: Mapping[str, str] | None = None) -> str:
    """supervisord.conf for `programs`, with `env` added to every program's environment."""
    state = stack.state_dir
    variables = {**SHARED_ENV, "MLFLOW_TRACKING_URI": stack.mlflow.tracking_uri, **(env or {})}
    sections: list[tuple[str, dict[str, Any]]] = [
        ("unix_http_server", {"file": state / "supervisor.sock", "chmod": "0700"}),
        ("supervisord", {
            "nodaemon": "true", "silent": "true", "logfile": state / "stack.log",
            "logfile_maxbytes": 0, "pidfile": state / "supervisord.pid",
            "childlogdir": state / "logs", "directory": ROOT,
            "environment": ",".join(f'{k}="{v}"' for k, v in variables.items()),
        }),
        ("rpcinterface:supervisor", {
            "supervisor.rpcinterface_factory": "supervisor.rpcinterface:make_main_rpcinterface"}),
        ("supervisorctl", {"serverurl": f"unix://{state / 'supervisor.sock'}"}),
        ("eventlistener:restarts", {
            "command": shlex.join([sys.executable, "-m", "scripts.localstack.restarts",
                                   str(state / "restarts.json")]),
            "directory": ROOT, "events": "PROCESS_STATE", "priority": 1,
            "stdout_logfile": "NONE",  # its stdout is the event protocol
            "stderr_logfile": state / "logs" / "restarts.log", "stderr_logfile_maxbytes": 0,
        }),
    ]
    sections += [(f"program:{p.name}", {
        "command": shlex.join(["/bin/bash", "-c", p.line]),
        "priority": p.priority,
        "autorestart": "true", "startsecs": START_S, "startretries": START_RETRIES,
        "stopsignal": "TERM", "stopwaitsecs": p.stop_wait_s,
        "stopasgroup": "true", "killasgroup": "true",
        "redirect_stderr": "true", "stdout_logfile": state / "logs" / f"{p.name}.log",
        "stdout_logfile_maxbytes": 0,
    }) for p in programs]
    # supervisord expands %(name)s in values: a literal % is written %%.
    return "".join(
        f"[{title}]\n" + "".join(f"{k}={str(v).replace('%', '%%')}\n" for k, v in values.items())
        + "\n" for title, values in sections)


def write_config(stack: LocalStack, programs: Iterable[Program], *,
                 env: Mapping[str, str] | None = None) -> Path:
    """Prepare every component's data and write <state>/supervisord.conf."""
    for component in stack.components:
        component.prepare()
    (stack.state_dir / "logs").mkdir(parents=True, exist_ok=True)
    path = stack.state_dir / "supervisord.conf"
    write_private(path, config_text(stack, programs, env=env))  # the services' MLflow keys
    return path


def supervisord_argv(state_dir: Path) -> list[str]:
    return [str(VENV_BIN / "supervisord"), "-c", str(state_dir / "supervisord.conf")]


class Supervisor:
    """A running stack's supervisord, over its unix socket (what `supervisorctl` uses)."""

    def __init__(self, state_dir: Path) -> None:
        from supervisor.xmlrpc import SupervisorTransport

        self.state_dir = state_dir
        transport = SupervisorTransport(None, None, f"unix://{state_dir / 'supervisor.sock'}")
        # The URL is a placeholder: the transport connects to the socket.
        self._rpc: Any = xmlrpc.client.ServerProxy("http://127.0.0.1", transport)

    def processes(self) -> dict[str, dict[str, Any]]:
        """Each program's state, pid and more (supervisord's getProcessInfo), by name."""
        return {info["name"]: info for info in self._rpc.supervisor.getAllProcessInfo()}

    def pid(self, name: str) -> int:
        pid: int = self._rpc.supervisor.getProcessInfo(name)["pid"]
        if not pid:
            raise RuntimeError(f"{name} is not running")
        return pid

    def kill(self, name: str) -> int:
        """SIGKILL the program's whole process group, as a crash would; its pid."""
        pid = self.pid(name)
        os.killpg(pid, signal.SIGKILL)  # each program leads a process group of its own
        return pid

    def stop(self, name: str) -> None:
        """SIGTERM; returns once it has exited (its drain), or was killed after stop_wait_s."""
        self._rpc.supervisor.stopProcess(name, True)

    def start(self, name: str, *, wait: bool = True) -> None:
        """Start it; with `wait`, return once it is running (readiness is the caller's)."""
        self._rpc.supervisor.startProcess(name, wait)

    def restart(self, name: str) -> None:
        """A rolling restart of one program: stop (its drain), then start again."""
        self.stop(name)
        self.start(name)

    def restarts(self) -> dict[str, int]:
        """Restarts so far, by program (those that never restarted are absent)."""
        try:
            counts: dict[str, int] = json.loads((self.state_dir / "restarts.json").read_text())
        except (OSError, ValueError):  # not written yet
            return {}
        return counts

    def process_groups(self) -> list[int]:
        """The process group of each running program (its pid: it leads its group)."""
        return [info["pid"] for info in self.processes().values() if info["pid"]]
