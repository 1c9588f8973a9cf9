"""supervisord's event listener for the local stack: counts the restarts of each program.

    python -m scripts.localstack.restarts STATE_FILE     (supervisord starts it; see supervisor.py)

A restart is supervisord starting a program again after it exited on its own (from RUNNING)
or died while starting (BACKOFF), as Kubernetes counts a container's restarts; stopping and
starting a program on purpose (a rolling restart) is not one. After each, STATE_FILE (JSON,
program name → restarts) is rewritten whole, and a line on stderr (its log) says why.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from supervisor import childutils

#: The states a program is started again from after a failure.
_FAILED = {"EXITED", "BACKOFF"}


def record(state_file: Path, counts: dict[str, int]) -> None:
    tmp = state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(counts, indent=2, sort_keys=True))
    tmp.replace(state_file)  # readers never see half a file


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    state_file = Path(argv[0])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # supervisord's stop: a clean exit
    counts: dict[str, int] = {}
    record(state_file, counts)
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        event = childutils.get_headers(payload.split("\n", 1)[0])
        name, state = event["processname"], headers["eventname"].removeprefix("PROCESS_STATE_")
        if state == "EXITED" and event.get("expected") == "0":
            print(f"{name} exited unexpectedly (pid {event['pid']})", file=sys.stderr,
                  flush=True)
        elif state == "STARTING" and event.get("from_state") in _FAILED:
            counts[name] = counts.get(name, 0) + 1
            record(state_file, counts)
            print(f"{name} restarted ({counts[name]} so far)", file=sys.stderr, flush=True)
        elif state == "FATAL":
            print(f"{name} gave up: it kept exiting while starting", file=sys.stderr,
                  flush=True)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
