"""An HTTPS server on a loopback address for the TLS tests (origination and passthrough):
answers each request with the SNI the client sent, the client certificate's common name
(when it showed one), the Host header and, when it was given a name, that name as "pod"
(as the harness's plain upstreams report theirs), as JSON; optionally requires a client
certificate signed by a given CA. Handshakes that fail are counted, not printed."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.tls_certs import Issued


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _TlsServer

    def do_GET(self) -> None:
        conn = self.connection
        peer = conn.getpeercert() if isinstance(conn, ssl.SSLSocket) else None
        subject = dict(x[0] for x in peer["subject"]) if peer else {}
        seen = {"sni": getattr(conn, "sni", None), "client": subject.get("commonName"),
                "host": self.headers.get("host")}
        if self.server.name is not None:
            seen["pod"] = self.server.name
        self.server.requests.append(seen)
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _TlsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext,
                 name: str | None) -> None:
        self.context = context
        self.name = name
        self.failed_handshakes = 0
        self.requests: list[dict[str, Any]] = []
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        raw, addr = self.socket.accept()
        # The handshake happens on the handler's thread, at its first read: a client
        # that stalls mid-handshake holds up nobody else.
        return self.context.wrap_socket(raw, server_side=True,
                                        do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.failed_handshakes += 1


class TlsUpstream:
    def __init__(self, ip: str, port: int, cert: Issued, *,
                 client_ca: Path | None = None, name: str | None = None) -> None:
        self.cert, self.name = cert, name
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert.cert, cert.key)
        if client_ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(client_ca)

        def remember_sni(sock: Any, name: str | None, _: ssl.SSLContext) -> None:
            sock.sni = name  # read back by the handler from its connection
        context.sni_callback = remember_sni
        self.server = _TlsServer((ip, port), context, name)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name=f"tls-upstream-{ip}")
        self.thread.start()

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.server.requests

    @property
    def failed_handshakes(self) -> int:
        return self.server.failed_handshakes

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
