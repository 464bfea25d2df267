"""A Kubernetes API-server double for tests: real HTTP, real wire shapes, injectable faults.

It speaks just enough of the API server's protocol for a LIST+WATCH client built on the
official ``kubernetes`` Python client (discovery, LIST, WATCH, GET of one object), and can
produce on demand the failures a real server only produces under load or after hours:
mid-watch 410 Expired, a connection cut in the middle of an event line, a stream that goes
silent, HTTP errors on LIST or WATCH, history compaction, a server restart.

Shapes were checked against a real kube-apiserver v1.37.2 (``tests/kube/cluster.py``):

* LIST items carry no ``apiVersion``/``kind``; watch event objects do.
* A watch that cannot be served from history answers HTTP 200 and then one ERROR event
  holding a Status (code 410, reason Expired), and ends the stream cleanly.
* With a labelSelector, an object that stops matching arrives as DELETED (its previous
  state, stamped with the new resourceVersion) and one that starts matching as ADDED.
* A path under an API group/version that is not served (a CRD that is not installed) gets
  a ``text/plain`` "404 page not found", not a Status; an unknown resource inside a served
  group/version gets a JSON Status 404.

Not modelled: writes over HTTP (tests change state through :meth:`FakeApiServer.upsert` and
:meth:`FakeApiServer.delete`), set-based label selectors, ``resourceVersionMatch`` on LIST
(a LIST is always served from the latest state), protobuf, aggregated discovery, TLS.

Stdlib only.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import re
import select
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["RESOURCES", "WATCH_FAULTS", "FakeApiServer", "Resource"]

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str  # "" is the core group
    kind: str
    plural: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()


RESOURCES: tuple[Resource, ...] = (
    Resource("", "Service", "services", short_names=("svc",)),
    Resource("", "Pod", "pods", short_names=("po",)),
    Resource("", "Endpoints", "endpoints", short_names=("ep",)),
    Resource("", "Namespace", "namespaces", namespaced=False, short_names=("ns",)),
    Resource("", "ConfigMap", "configmaps", short_names=("cm",)),
    Resource("", "Secret", "secrets"),
    Resource("discovery.k8s.io", "EndpointSlice", "endpointslices"),
    Resource("networking.istio.io", "VirtualService", "virtualservices", short_names=("vs",)),
    Resource("networking.istio.io", "DestinationRule", "destinationrules", short_names=("dr",)),
)

WATCH_FAULTS = frozenset({"gone", "error", "cut", "stall", "http500"})

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

# Idle streams wake this often to notice a client that hung up; otherwise a handler thread
# would linger until the next event for its kind.
_POLL = 0.2


def _dumps(body: Obj) -> bytes:
    # Compact, as Go's encoding/json writes it, so byte-level behaviour (line lengths,
    # where a cut falls) is what the client meets in production.
    return json.dumps(body, separators=(",", ":")).encode()


def _status(code: int, message: str, details: dict[str, Any] | None = None) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": _REASONS.get(code, "Unknown"),
    }
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _injected(code: int) -> Obj:
    return _status(
        code,
        'an error on the server ("injected by FakeApiServer") has prevented the request'
        " from succeeding",
    )


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _api_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def _external(res: Resource, version: str, obj: Obj) -> Obj:
    """The object as the server sends it in a watch event or a GET: kind/apiVersion first."""
    out: Obj = {"kind": res.kind, "apiVersion": _api_version(res.group, version)}
    out.update((k, v) for k, v in obj.items() if k not in ("kind", "apiVersion"))
    return out


def _with_rv(obj: Obj, rv: int) -> Obj:
    out = dict(obj)
    out["metadata"] = {**obj.get("metadata", {}), "resourceVersion": str(rv)}
    return out


# ----------------------------------------------------------------------------- selectors

Matcher = Callable[[Obj], bool]

_SET_BASED = re.compile(r"\(|\s(not)?in\s")


def _requirements(selector: str) -> list[tuple[str, str, str]]:
    """(key, op, value) per comma-separated term; op is "=", "!=", "" (exists) or "!"."""
    if _SET_BASED.search(selector):
        raise ValueError(f"set-based selectors are not supported by the double: {selector}")
    reqs = []
    for raw in selector.split(","):
        term = raw.strip()
        if not term:
            continue
        for op in ("!=", "==", "="):
            if op in term:
                key, value = (s.strip() for s in term.split(op, 1))
                op = "=" if op == "==" else op
                break
        else:
            op, value = ("!", "") if term.startswith("!") else ("", "")
            key = term.lstrip("!").strip()
        if not key or any(c.isspace() or c in "=!" for c in key):
            raise ValueError(f"unable to parse requirement: {term!r}")
        reqs.append((key, op, value))
    return reqs


def _holds(values: dict[str, Any], key: str, op: str, value: str) -> bool:
    if op == "=":
        return values.get(key) == value
    if op == "!=":
        return values.get(key) != value  # like the real server, absent counts as different
    if op == "!":
        return key not in values
    return key in values


def _label_matcher(selector: str) -> Matcher:
    reqs = _requirements(selector)
    return lambda obj: all(
        _holds(obj["metadata"].get("labels") or {}, *req) for req in reqs
    )


def _field_matcher(selector: str) -> Matcher:
    """metadata.name and metadata.namespace: the field labels every resource supports;
    and a Secret's `type`."""
    reqs = _requirements(selector)
    for key, op, _ in reqs:
        if key not in ("metadata.name", "metadata.namespace", "type") or op not in ("=", "!="):
            raise ValueError(f"field label not supported: {key}")

    def fields(obj: Obj) -> dict[str, Any]:
        md = obj["metadata"]
        return {"metadata.name": md.get("name", ""), "metadata.namespace": md.get("namespace", ""),
                "type": obj.get("type", "")}

    return lambda obj: all(_holds(fields(obj), *req) for req in reqs)


# ----------------------------------------------------------------------------- state


@dataclass
class _Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    res: Resource
    obj: Obj  # state after the change; for DELETED the last state with the new rv
    prev: Obj | None  # state before the change


@dataclass(eq=False)
class _Watch:
    res: Resource
    namespace: str | None
    labels: Matcher
    fields: Matcher
    queue: deque[tuple[str, Obj]] = field(default_factory=deque)

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        return self.labels(obj) and self.fields(obj)

    def translate(self, ev: _Event) -> tuple[str, Obj] | None:
        """What this watcher sees of an event, with the watch cache's selector semantics."""
        if ev.type == "ADDED":
            return ("ADDED", ev.obj) if self.matches(ev.obj) else None
        if ev.type == "DELETED":
            return ("DELETED", ev.obj) if self.matches(ev.obj) else None
        now, before = self.matches(ev.obj), self.matches(ev.prev)
        if now and before:
            return ("MODIFIED", ev.obj)
        if now:
            return ("ADDED", ev.obj)
        if before:
            assert ev.prev is not None
            return ("DELETED", _with_rv(ev.prev, ev.rv))
        return None


@dataclass
class _WatchFault:
    fault: str
    kind: str | None
    after_events: int
    code: int
    # release_stalled() generation when the request arrived: a release issued after the
    # client saw the response headers must free the stream even if it has not stalled yet.
    stall_gen: int = 0


@dataclass
class _ListFault:
    kind: str | None
    code: int
    retry_after: int | None = None


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Several streaming watches plus the LISTs of a resync arrive at once.
    request_queue_size = 64

    def __init__(self, addr: tuple[str, int], api: FakeApiServer) -> None:
        self.api = api
        super().__init__(addr, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls getfqdn(), a reverse DNS lookup that can take
        # seconds on a machine without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-stream is routine here; anything else is a bug in the double.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class FakeApiServer:
    """See the module docstring. State lives across stop()/start(), like etcd behind a
    restarted API server; start() after stop() binds the same port."""

    def __init__(self, token: str = "test-token", bookmark_interval: float | None = None) -> None:
        self.token = token
        self.bookmark_interval = bookmark_interval
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._requests_lock = threading.Lock()
        self._cond = threading.Condition()
        # A fresh etcd is at revision 1, so a LIST of an empty cluster never returns "0"
        # (which a watch would read as "any version").
        self._rv = 1
        self._compacted_rv = 1
        self._store: dict[Resource, dict[tuple[str, str], Obj]] = {r: {} for r in RESOURCES}
        self._history: list[_Event] = []
        self._watches: set[_Watch] = set()
        self._watch_faults: list[_WatchFault] = []
        self._list_faults: list[_ListFault] = []
        self._continues: dict[str, tuple[int, list[Obj]]] = {}
        self._served: dict[str, list[str]] = {"": ["v1"], "discovery.k8s.io": ["v1"]}
        self._stall_gen = 0
        self._stopping = False
        self._streams = 0
        self._conns: set[socket.socket] = set()
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()  # stop() from a Timer must not race start()
        self._httpd: _HTTPServer | None = _HTTPServer(("127.0.0.1", 0), self)
        self.port: int = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> FakeApiServer:
        with self._lifecycle:
            if self._thread is not None:
                return self
            with self._cond:
                self._stopping = False
            if self._httpd is None:
                self._httpd = _HTTPServer(("127.0.0.1", self.port), self)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-apiserver-{self.port}",
                daemon=True,
            )
            self._thread.start()
            return self

    def stop(self) -> None:
        """Stop listening, then end open watches cleanly (as a draining API server does)
        and drop stalled and idle connections. Safe to call twice or from another thread."""
        with self._lifecycle:
            # The listener goes first: a watcher that reconnects the moment its stream ends
            # must find the port closed, not a server that accepts and then hangs up.
            if self._httpd is not None:
                if self._thread is not None:
                    self._httpd.shutdown()
                self._httpd.server_close()
                self._httpd = None
            if self._thread is not None:
                self._thread.join(timeout=2.0)
                self._thread = None
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._streams == 0, timeout=2.0)
                conns = list(self._conns)
            for conn in conns:
                # Keep-alive connections parked in readline() would otherwise go on serving
                # requests after stop(); their handler threads close the sockets themselves.
                _shutdown(conn)

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: str | os.PathLike[str]) -> Path:
        """JSON is YAML, so load_kube_config() reads this as is."""
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": "default"},
                }
            ],
            "current-context": "fake",
            "preferences": {},
        }
        p = Path(path)
        p.write_text(json.dumps(cfg, indent=2))
        return p

    # ------------------------------------------------------------------ discovery
    def serve_group(self, group: str, versions: list[str]) -> None:
        """Serve ``group`` at ``versions`` (first = preferred); an empty list withdraws the
        group, like deleting its CRDs."""
        with self._cond:
            # Replaced, never mutated: a request handler reads one consistent snapshot.
            served = {g: v for g, v in self._served.items() if g != group}
            if versions:
                served[group] = list(versions)
            self._served = served

    # ------------------------------------------------------------------ state
    def _resource(self, group: str, kind: str) -> Resource:
        for r in RESOURCES:
            if r.group == group and r.kind == kind:
                return r
        raise ValueError(f"the double does not know kind {kind!r} in group {group!r}")

    def upsert(self, api_version: str, kind: str, obj: Obj) -> Obj:
        group, version = _split_api_version(api_version)
        res = self._resource(group, kind)
        body = copy.deepcopy(obj)
        body.pop("apiVersion", None)
        body.pop("kind", None)
        md = body.setdefault("metadata", {})
        name = md.get("name")
        if not name:
            raise ValueError("metadata.name is required")
        if res.namespaced:
            md["namespace"] = md.get("namespace") or "default"
        else:
            md.pop("namespace", None)
        key = (md.get("namespace", ""), name)
        with self._cond:
            prev = self._store[res].get(key)
            self._rv += 1
            md["resourceVersion"] = str(self._rv)
            if prev is not None:
                # uid and creationTimestamp are immutable on a real server.
                md["uid"] = prev["metadata"]["uid"]
                md["creationTimestamp"] = prev["metadata"]["creationTimestamp"]
            else:
                md["uid"] = md.get("uid") or str(uuid.uuid4())
                md["creationTimestamp"] = md.get("creationTimestamp") or _now()
            self._store[res][key] = body
            self._record(_Event(self._rv, "MODIFIED" if prev else "ADDED", res, body, prev))
        return copy.deepcopy(_external(res, version, body))

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        group, _ = _split_api_version(api_version)
        res = self._resource(group, kind)
        key = (namespace if res.namespaced else "", name)
        with self._cond:
            prev = self._store[res].pop(key, None)
            if prev is None:
                raise KeyError(f'{res.plural} "{name}" not found in namespace {namespace!r}')
            self._rv += 1
            self._record(_Event(self._rv, "DELETED", res, _with_rv(prev, self._rv), prev))

    def objects(self, api_version: str, kind: str) -> list[Obj]:
        group, version = _split_api_version(api_version)
        res = self._resource(group, kind)
        with self._cond:
            items = sorted(self._store[res].items())
            return [copy.deepcopy(_external(res, version, o)) for _, o in items]

    @property
    def resource_version(self) -> str:
        """The current global resourceVersion (what a LIST now would report)."""
        with self._cond:
            return str(self._rv)

    def compact(self) -> None:
        with self._cond:
            self._history.clear()
            self._compacted_rv = self._rv
            self._continues.clear()

    def _record(self, ev: _Event) -> None:  # caller holds self._cond
        self._history.append(ev)
        for w in self._watches:
            if w.res is ev.res and (seen := w.translate(ev)) is not None:
                w.queue.append(seen)
        self._cond.notify_all()

    # ------------------------------------------------------------------ faults
    def fail_next_watch(
        self, fault: str, *, kind: str | None = None, after_events: int = 0, code: int = 500
    ) -> None:
        """Queue a fault for the next WATCH (of ``kind``, if given).

        gone:    ``after_events`` events, then an ERROR event with Status 410 Expired, end.
        error:   the same with Status ``code`` (500 -> InternalError).
        cut:     ``after_events`` events, then the first half of the next event's line in
                 its own chunk, then the TCP connection closes with no final chunk.
        stall:   headers and ``after_events`` events, then silence until release_stalled()
                 or stop(), which close the connection without a final chunk.
        http500: the WATCH request itself fails with HTTP ``code`` and a Status body.
        """
        if fault not in WATCH_FAULTS:
            raise ValueError(f"unknown watch fault {fault!r}; one of {sorted(WATCH_FAULTS)}")
        with self._cond:
            self._watch_faults.append(_WatchFault(fault, kind, after_events, code))

    def fail_next_list(self, *, kind: str | None = None, code: int = 500,
                       retry_after: int | None = None) -> None:
        """The next LIST (of ``kind``, if given) fails with HTTP ``code``, with a
        ``Retry-After`` header if given (as a starting API server answers 503)."""
        with self._cond:
            self._list_faults.append(_ListFault(kind, code, retry_after))

    def release_stalled(self) -> None:
        """Close every stalled stream whose request has already arrived (even one that has
        not reached its stall point yet, so a test need not race the handler thread)."""
        with self._cond:
            self._stall_gen += 1
            self._cond.notify_all()

    def pending_faults(self) -> int:
        """Faults queued and not yet consumed by a matching request."""
        with self._cond:
            return len(self._watch_faults) + len(self._list_faults)

    @property
    def open_watches(self) -> int:
        """Watch streams currently open (including stalled ones)."""
        with self._cond:
            return self._streams

    def _take(self, queue: list[Any], kind: str) -> Any:
        with self._cond:
            for i, f in enumerate(queue):
                if f.kind is None or f.kind == kind:
                    if isinstance(f, _WatchFault):
                        f.stall_gen = self._stall_gen
                    return queue.pop(i)
        return None

    def _log(self, method: str, path: str, query: dict[str, str]) -> None:
        with self._requests_lock:
            self.requests.append((method, path, query))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shutdown(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


def _group(group: str, versions: list[str]) -> Obj:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


def _is_true(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, like the real server
    server: _HTTPServer

    # ------------------------------------------------------------------ plumbing
    def setup(self) -> None:
        super().setup()
        # Go's net/http sets TCP_NODELAY; without it Nagle holds back small event chunks.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.api._cond:
            self.server.api._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.api._cond:
                self.server.api._conns.discard(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is FakeApiServer.requests

    def _send_json(self, code: int, body: Obj, headers: dict[str, str] | None = None) -> None:
        data = _dumps(body)
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_text_404(self) -> None:
        # What the real server's mux answers outside any installed group/version.
        data = b"404 page not found\n"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_found(self) -> None:
        self._send_json(404, _status(404, "the server could not find the requested resource", {}))

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _event(self, typ: str, obj: Obj) -> bytes:
        return _dumps({"type": typ, "object": obj}) + b"\n"

    # ------------------------------------------------------------------ routing
    def do_GET(self) -> None:
        api = self.server.api
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        path = url.path.rstrip("/") or "/"
        api._log("GET", path, query)
        if api._stopping:
            self._cut()  # a stopped server answers nothing
            return
        if self.headers.get("Authorization") != f"Bearer {api.token}":
            self._send_json(401, _status(401, "Unauthorized"))
            return
        if path == "/api":
            self._send_json(200, self._api_versions())
        elif path == "/apis":
            groups = [_group(g, v) for g, v in api._served.items() if g]
            self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        elif path == "/version":
            self._send_json(200, _VERSION)
        elif path in ("/healthz", "/readyz", "/livez"):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self._route(path.strip("/").split("/"), query)

    def _refuse(self) -> None:
        api = self.server.api
        url = urlsplit(self.path)
        api._log(self.command, url.path, dict(parse_qsl(url.query, keep_blank_values=True)))
        # Drain the body so the keep-alive connection stays in sync.
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._send_json(
            405, _status(405, f"{self.command} is not supported by the API server double")
        )

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

    def _route(self, parts: list[str], query: dict[str, str]) -> None:
        served = self.server.api._served
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 2:
            group = parts[1]
            if len(parts) == 2:
                if group not in served:
                    self._send_text_404()
                else:
                    body = {"kind": "APIGroup", "apiVersion": "v1", **_group(group, served[group])}
                    self._send_json(200, body)
                return
            version, rest = parts[2], parts[3:]
        else:
            self._send_text_404()
            return
        if version not in served.get(group, ()):
            self._send_text_404()
            return
        if not rest:
            self._send_json(200, self._resource_list(group, version))
            return

        namespace: str | None = None
        name: str | None = None
        if rest[0] == "namespaces" and len(rest) in (3, 4):
            namespace, plural = rest[1], rest[2]
            name = rest[3] if len(rest) == 4 else None
        elif len(rest) in (1, 2):
            plural = rest[0]
            name = rest[1] if len(rest) == 2 else None
        else:
            self._not_found()
            return
        res = next((r for r in RESOURCES if r.group == group and r.plural == plural), None)
        if res is None or (namespace is not None and not res.namespaced):
            self._not_found()
            return
        if name is not None and res.namespaced and namespace is None:
            self._not_found()
            return

        if name is not None:
            self._get(res, version, namespace or "", name)
        elif _is_true(query.get("watch")):
            self._watch(res, version, namespace, query)
        else:
            self._list(res, version, namespace, query)

    # ------------------------------------------------------------------ discovery bodies
    def _api_versions(self) -> Obj:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.server.api.port}"}
            ],
        }

    def _resource_list(self, group: str, version: str) -> Obj:
        resources = [
            {
                "name": r.plural,
                "singularName": r.kind.lower(),
                "namespaced": r.namespaced,
                "kind": r.kind,
                # Only what the double implements, so a client that checks verbs is honest.
                "verbs": ["get", "list", "watch"],
                **({"shortNames": list(r.short_names)} if r.short_names else {}),
            }
            for r in RESOURCES
            if r.group == group
        ]
        body: Obj = {"kind": "APIResourceList"}
        if group:  # the core list has no apiVersion on the real server either
            body["apiVersion"] = "v1"
        body.update({"groupVersion": _api_version(group, version), "resources": resources})
        return body

    # ------------------------------------------------------------------ GET / LIST
    def _get(self, res: Resource, version: str, namespace: str, name: str) -> None:
        api = self.server.api
        with api._cond:
            obj = api._store[res].get((namespace if res.namespaced else "", name))
            body = _dumps(_external(res, version, obj)) if obj else None
        if body is None:
            self._send_json(
                404,
                _status(404, f'{res.plural} "{name}" not found',
                        {"name": name, "kind": res.plural}),
            )
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _matchers(self, query: dict[str, str]) -> tuple[Matcher, Matcher] | None:
        try:
            return (
                _label_matcher(query.get("labelSelector", "")),
                _field_matcher(query.get("fieldSelector", "")),
            )
        except ValueError as e:
            self._send_json(400, _status(400, str(e)))
            return None

    def _list(self, res: Resource, version: str, namespace: str | None,
              query: dict[str, str]) -> None:
        api = self.server.api
        fault = api._take(api._list_faults, res.kind)
        if fault is not None:
            retry = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
            self._send_json(fault.code, _injected(fault.code), retry)
            return
        matchers = self._matchers(query)
        if matchers is None:
            return
        w = _Watch(res, namespace, *matchers)
        token = query.get("continue", "")
        with api._cond:
            if token:
                page = api._continues.pop(token, None)
                if page is None:
                    self._send_json(410, _status(410, _CONTINUE_EXPIRED))
                    return
                rv, items = page
            else:
                rv = api._rv
                items = [o for _, o in sorted(api._store[res].items()) if w.matches(o)]
            limit = int(query.get("limit") or 0)
            meta: Obj = {"resourceVersion": str(rv)}
            if 0 < limit < len(items):
                # A consistent snapshot, as etcd gives the real server: later pages show
                # the state as of the first page's resourceVersion.
                items, rest = items[:limit], items[limit:]
                next_token = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
                api._continues[next_token] = (rv, rest)
                meta["continue"] = next_token
                meta["remainingItemCount"] = len(rest)
            body = {
                "kind": f"{res.kind}List",
                "apiVersion": _api_version(res.group, version),
                "metadata": meta,
                "items": items,
            }
            data = _dumps(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # ------------------------------------------------------------------ WATCH
    def _watch(self, res: Resource, version: str, namespace: str | None,
               query: dict[str, str]) -> None:
        api = self.server.api
        fault: _WatchFault | None = api._take(api._watch_faults, res.kind)
        if fault is not None and fault.fault == "http500":
            self._send_json(fault.code, _injected(fault.code))
            return
        matchers = self._matchers(query)
        if matchers is None:
            return
        since = query.get("resourceVersion", "")
        if since not in ("", "0") and not since.isdigit():
            self._send_json(400, _status(400, f"invalid resource version: {since}"))
            return
        timeout = float(query["timeoutSeconds"]) if query.get("timeoutSeconds") else None
        interval = api.bookmark_interval if _is_true(query.get("allowWatchBookmarks")) else None

        w = _Watch(res, namespace, *matchers)
        expired: Obj | None = None
        with api._cond:
            if since in ("", "0"):
                # "Start at most recent": the current state as synthetic ADDEDs, then live.
                current = sorted(
                    api._store[res].values(), key=lambda o: int(o["metadata"]["resourceVersion"])
                )
                w.queue.extend(("ADDED", obj) for obj in current if w.matches(obj))
            elif int(since) < api._compacted_rv:
                expired = _status(
                    410, f"too old resource version: {since} ({api._compacted_rv})"
                )
            else:
                for ev in api._history:
                    if ev.rv > int(since) and ev.res is res and (seen := w.translate(ev)):
                        w.queue.append(seen)
            if expired is None:
                api._watches.add(w)
            api._streams += 1
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-cache, private")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if expired is not None:
                self._chunk(self._event("ERROR", expired))
                self._end_chunks()
                return
            self._stream(w, res, version, since, fault, timeout, interval)
        except OSError:
            self.close_connection = True  # the client went away
        finally:
            with api._cond:
                api._watches.discard(w)
                api._streams -= 1
                api._cond.notify_all()

    def _stream(self, w: _Watch, res: Resource, version: str, since: str,
                fault: _WatchFault | None, timeout: float | None,
                interval: float | None) -> None:
        api = self.server.api
        now = time.monotonic()
        deadline = now + timeout if timeout else None
        next_bookmark = now + interval if interval else None
        sent = 0
        while True:
            if fault is not None and fault.fault != "cut" and sent >= fault.after_events:
                self._fire(fault, w, since)
                return
            # Decide under the lock, write outside it: a client that does not read must not
            # be able to block upsert() in another thread.
            action, batch, bookmark_rv = "idle", [], 0
            with api._cond:
                now = time.monotonic()
                if api._stopping or (deadline is not None and now >= deadline):
                    action = "end"
                elif w.queue:
                    action, batch = "events", list(w.queue)
                    w.queue.clear()
                elif next_bookmark is not None and now >= next_bookmark:
                    # Taken with the queue empty: every event at or below this revision has
                    # been sent and every later one will follow the bookmark.
                    action, bookmark_rv = "bookmark", api._rv
                    next_bookmark = now + (interval or 0)
                else:
                    wake = min(t for t in (deadline, next_bookmark, now + _POLL) if t is not None)
                    api._cond.wait(wake - now)
            if action == "end":
                self._end_chunks()
                return
            if action == "idle":
                if self._client_gone():
                    self.close_connection = True
                    return
                continue
            if action == "bookmark":
                bookmark = {
                    "kind": res.kind,
                    "apiVersion": _api_version(res.group, version),
                    "metadata": {"resourceVersion": str(bookmark_rv)},
                }
                self._chunk(self._event("BOOKMARK", bookmark))
            for typ, obj in batch:
                line = self._event(typ, _external(res, version, obj))
                if fault is not None and sent >= fault.after_events:
                    if fault.fault == "cut":
                        self._chunk(line[: len(line) // 2])
                        self._cut()
                        return
                    break  # the fault fires between events; the rest never reaches the client
                self._chunk(line)
                sent += 1

    def _fire(self, fault: _WatchFault, w: _Watch, since: str) -> None:
        api = self.server.api
        if fault.fault == "gone":
            with api._cond:
                rv = api._rv
            status = _status(410, f"too old resource version: {since or rv} ({rv})")
            self._chunk(self._event("ERROR", status))
            self._end_chunks()
        elif fault.fault == "error":
            self._chunk(self._event("ERROR", _injected(fault.code)))
            self._end_chunks()
        elif fault.fault == "stall":
            with api._cond:
                api._watches.discard(w)  # nothing more will be sent; don't queue for it
                api._cond.wait_for(lambda: api._stall_gen != fault.stall_gen or api._stopping)
            self._cut()

    def _cut(self) -> None:
        """Drop the TCP connection without the final chunk: a broken stream, not an end."""
        self.close_connection = True
        _shutdown(self.connection)

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result."
    " You can start a new list without the continue parameter."
)

_VERSION = {
    "major": "1",
    "minor": "37",
    "gitVersion": "v1.37.2-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "1970-01-01T00:00:00Z",
    "goVersion": "go1.26",
    "compiler": "gc",
    "platform": "linux/amd64",
}
