"""A stand-in pod: an HTTP server on its own address that answers with who it is."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Decides the status of each request (for flaky or slow upstreams in tests).
Behaviour = Callable[[BaseHTTPRequestHandler], int]


class Workload:
    def __init__(self, ip: str, port: int, service: str, pod: str, version: str = "v1",
                 behaviour: Behaviour | None = None) -> None:
        self.ip, self.port = ip, port
        self.identity = {"service": service, "pod": pod, "version": version}
        self.requests: list[dict[str, Any]] = []
        workload = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes; with Nagle on, each response would
            # wait for the peer's delayed ACK (~40 ms).
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                workload.requests.append({"path": self.path, "headers": dict(self.headers)})
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                status = behaviour(self) if behaviour else 200
                body = json.dumps({**workload.identity, "path": self.path}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_DELETE = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((ip, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name=f"workload-{pod}")
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
