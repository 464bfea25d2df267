"""A stand-in pod: an HTTP server on its own address that answers with who it is.

    python -m controlplane.samples.workload --ip 0.0.0.0 --port 8080 \
        --service reviews --pod reviews-v1-0 --version v1

runs one until SIGINT or SIGTERM (as the containers of docker-compose.yml do).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# Decides the status of each request (for flaky or slow upstreams in tests).
Behaviour = Callable[[BaseHTTPRequestHandler], int]


class _Server(ThreadingHTTPServer):
    """Keeps the connections it accepted, so stop() can close them: otherwise a handler
    thread would go on answering a keep-alive connection after the listener closed."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]
                 ) -> None:
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client (or the sidecar: a timeout, a mirror's copy) that leaves before the
        # answer is written is normal traffic, not an error worth a traceback.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            open_ = list(self.connections)
        for conn in open_:
            # shutdown() wakes the handler thread blocked reading the next request (it
            # sees EOF and ends, closing the socket); the peer sees the FIN at once.
            with contextlib.suppress(OSError):  # already gone
                conn.shutdown(socket.SHUT_RDWR)


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
                workload.requests.append({"path": self.path, "headers": {
                    k.lower(): v for k, v in self.headers.items()}})
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                status = behaviour(self) if behaviour else 200
                # The address the request reached (the pod IP even when bound to 0.0.0.0).
                host, port = self.connection.getsockname()[:2]
                body = json.dumps({**workload.identity, "address": f"{host}:{port}",
                                   "path": self.path}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_DELETE = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server((ip, port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name=f"workload-{pod}")
        self.thread.start()

    def stop(self) -> None:
        """Stop as a pod's process ends: no new connections, and the open ones closed,
        so a peer holding a pooled keep-alive connection sees it go too."""
        self.server.shutdown()
        self.server.server_close()
        self.server.close_connections()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m controlplane.samples.workload",
                                description="A stand-in pod: answers every request with its "
                                            "service, pod, version and address as JSON.")
    p.add_argument("--ip", default="0.0.0.0", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port (default %(default)s)")
    p.add_argument("--service", required=True, help="the service it belongs to")
    p.add_argument("--pod", default=os.environ.get("POD_NAME") or socket.gethostname(),
                   help="its pod name (default: $POD_NAME, else the host name)")
    p.add_argument("--version", default="v1", help="its version label (default %(default)s)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # SIGTERM (docker stop, kubelet) ends it like Ctrl-C.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    workload = Workload(args.ip, args.port, args.service, args.pod, args.version)
    print(json.dumps({"event": "listening", "address": f"{args.ip}:{args.port}",
                      **workload.identity}), flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut stop()
            signal.signal(sig, signal.SIG_IGN)
        workload.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
