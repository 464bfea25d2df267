"""Our Bookinfo's pods: HTTP servers on loopback addresses that answer as their service
and version and call the services they depend on through the sidecar, as Istio's
Bookinfo does (productpage → details and reviews; reviews v2 and v3 → ratings).

Each app records every request it was sent, by the test's trace header, which every app
passes on to the calls it makes (as Bookinfo passes on its tracing headers and
`end-user`), so a test asks "did ratings ever see this request?" about its own request
only, whatever requests of earlier tests are still under way."""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TRACE = "x-bookinfo-trace"
PASSED_ON = ("end-user", TRACE)

# The apps' own timeouts (Istio's Bookinfo: productpage gives reviews 3 s and tries twice;
# reviews v2 gives ratings 10 s, v3 2.5 s). productpage's is shorter here, so a test of a
# 7 s delay takes 2 s and not 6; the order of the timeouts is Bookinfo's.
PRODUCTPAGE_TIMEOUT = 1.0
RATINGS_TIMEOUT = {"v2": 10.0, "v3": 2.5}
STAR_COLOR = {"v2": "black", "v3": "red"}

REVIEWS_UNAVAILABLE = "Sorry, product reviews are currently unavailable for this book."
RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"


@dataclass
class Sidecar:
    """Where the apps send their outbound calls: the sidecar's outbound listener. A
    test sets it to the Envoy it runs (one per xDS mode)."""

    ip: str = ""
    port: int = 9080


@dataclass
class Gate:
    """Holds requests in the app until released: while closed, each request waits
    (after it was recorded as in progress, before the app calls anything)."""

    opened: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.opened.set()

    def close(self) -> None:
        self.opened.clear()

    def open(self) -> None:
        self.opened.set()


def call(sidecar: Sidecar, host: str, path: str, headers: dict[str, str],
         timeout: float) -> tuple[int, Any]:
    """One outbound call through the sidecar: (status, JSON body or text); status 0 when
    the call failed or timed out here (the caller's own timeout)."""
    conn = http.client.HTTPConnection(sidecar.ip, sidecar.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, **headers})
        resp = conn.getresponse()
        body = resp.read().decode()
    except (OSError, http.client.HTTPException) as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    try:
        return resp.status, json.loads(body)
    except ValueError:
        return resp.status, body


class App:
    """One Bookinfo pod."""

    def __init__(self, service: str, version: str, pod: str, ip: str, port: int,
                 sidecar: Sidecar) -> None:
        self.service, self.version, self.pod = service, version, pod
        self.sidecar = sidecar
        self.gate = Gate()
        self.seen: list[dict[str, Any]] = []  # every request: trace, path, headers
        self.active: dict[str, int] = {}  # trace -> requests of it in progress
        self.lock = threading.Lock()
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # two writes per answer: no delayed-ACK wait

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                trace = headers.get(TRACE, "")
                with app.lock:
                    app.seen.append({"trace": trace, "path": self.path, "headers": headers})
                    app.active[trace] = app.active.get(trace, 0) + 1
                try:
                    app.gate.opened.wait(60)
                    status, answer = app.answer({k: headers[k] for k in PASSED_ON
                                                 if k in headers})
                    body = json.dumps(answer).encode()
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    # The caller may have given up (a timeout): nobody to answer.
                    with contextlib.suppress(OSError):
                        self.wfile.write(body)
                finally:
                    with app.lock:
                        app.active[trace] -= 1

            def log_message(self, *args: Any) -> None:
                pass

            def handle(self) -> None:
                # A caller that went away mid-request is no error of the app's.
                with contextlib.suppress(OSError):
                    super().handle()

        self.server = ThreadingHTTPServer((ip, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name=f"bookinfo-{pod}")
        self.thread.start()

    # -- what each service answers --------------------------------------------------------
    def answer(self, passed_on: dict[str, str]) -> tuple[int, dict[str, Any]]:
        me: dict[str, Any] = {"service": self.service, "version": self.version,
                              "pod": self.pod}
        if self.service == "productpage":
            return 200, {**me, **self.page(passed_on)}
        if self.service == "reviews" and self.version in RATINGS_TIMEOUT:
            return 200, {**me, "ratings": self.ratings(passed_on)}
        if self.service == "ratings":
            return 200, {**me, "stars": 5}
        return 200, me  # details, reviews v1 (no ratings)

    def page(self, passed_on: dict[str, str]) -> dict[str, Any]:
        """productpage: details, then reviews, twice at most (Bookinfo's retry)."""
        _, details = call(self.sidecar, "details", "/details/0", passed_on,
                          PRODUCTPAGE_TIMEOUT)
        attempts = []
        for _ in range(2):
            status, body = call(self.sidecar, "reviews", "/reviews/0", passed_on,
                                PRODUCTPAGE_TIMEOUT)
            attempts.append(status)
            if status == 200:
                return {"details": details, "reviews": body, "reviews_attempts": attempts}
        return {"details": details, "reviews": {"error": REVIEWS_UNAVAILABLE},
                "reviews_attempts": attempts}

    def ratings(self, passed_on: dict[str, str]) -> dict[str, Any]:
        """reviews v2/v3: the stars from ratings, or why there are none."""
        status, body = call(self.sidecar, "ratings", "/ratings/0", passed_on,
                            RATINGS_TIMEOUT[self.version])
        if status != 200:
            return {"error": RATINGS_UNAVAILABLE, "status": status, "body": body}
        return {"stars": body["stars"], "color": STAR_COLOR[self.version],
                "version": body["version"]}

    # -- for the tests ------------------------------------------------------------------------
    def saw(self, trace: str) -> list[dict[str, Any]]:
        """The requests of this trace the app was sent."""
        with self.lock:
            return [r for r in self.seen if r["trace"] == trace]

    def holding(self, trace: str) -> int:
        """How many requests of this trace the app is still working on."""
        with self.lock:
            return self.active.get(trace, 0)

    def in_progress(self) -> int:
        """How many requests the app is working on, of any trace."""
        with self.lock:
            return sum(self.active.values())

    def stop(self) -> None:
        self.gate.open()
        self.server.shutdown()
        self.server.server_close()

