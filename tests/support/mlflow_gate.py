"""A loopback HTTP proxy in front of a real MLflow that can hold back the one request that moves
a registered model's alias: a crash test learns that the trainer has registered its version
and is about to promote it, and kills it right there.

Why a proxy and not a hook in the trainer: the trainer stays exactly as it runs in
production, and the point it is stopped at is defined by MLflow's API (POST
/api/2.0/mlflow/registered-models/alias, the only call that moves an alias), reached in order
after the version was registered. The held request is never forwarded, so the alias cannot
move late, and the test waits on the request's arrival, a positive signal, never on time.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

ALIAS_PATH = "/api/2.0/mlflow/registered-models/alias"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}


class AliasGate:
    """`with AliasGate(mlflow_url) as gate:` point the trainer at `gate.url`; after
    `gate.hold_alias_moves()`, `gate.held` is set when a request to move an alias arrives,
    and that request gets no answer until the gate closes (then a 503)."""

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        assert target.hostname is not None and target.port is not None, upstream
        self.held = threading.Event()
        self._holding = threading.Event()
        self._closed = threading.Event()
        gate = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if (self.command == "POST" and self.path.split("?")[0] == ALIAS_PATH
                        and gate._holding.is_set()):
                    gate.held.set()
                    gate._closed.wait()
                    self.send_error(503, "held by the test's alias gate")
                    return
                upstream = http.client.HTTPConnection(target.hostname, target.port,
                                                      timeout=60)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in _HOP_BY_HOP}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    reply = upstream.getresponse()
                    content = reply.read()
                finally:
                    upstream.close()
                self.send_response(reply.status, reply.reason)
                for key, value in reply.getheaders():
                    if key.lower() not in _HOP_BY_HOP | {"content-length"}:
                        self.send_header(key, value)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: the test's output is about the trainer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def hold_alias_moves(self) -> None:
        self._holding.set()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
