"""A stand-in pod: an HTTP server on its own address that answers with who it is.

    python -m controlplane.demo.workload --ip 0.0.0.0 --port 8080 \
        --service reviews --pod reviews-v1-0 --version v1

runs one until SIGINT or SIGTERM (as the containers of docker-compose.yml do).
"""

from __future__ import annotations

import argparse
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

        self.server = ThreadingHTTPServer((ip, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name=f"workload-{pod}")
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m controlplane.demo.workload",
                                description="A demo pod: answers every request with its "
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
