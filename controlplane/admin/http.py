"""HTTP endpoints: /healthz, /readyz, /metrics and /debug/*.

A minimal HTTP/1.1 server on asyncio streams: GET only, one response per connection.
Enough for probes, Prometheus and curl, without a web framework in the dependency tree.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from controlplane.admin import views
from controlplane.admin.analysis import LiveAnalysis
from controlplane.admin.metrics import Metrics
from controlplane.admin.service import newest
from controlplane.analysis.report import as_dict
from controlplane.status.sync import SyncRegistry
from controlplane.store import Store
from controlplane.xds.cache import SnapshotCache

log = structlog.get_logger("controlplane.admin.http")

Response = tuple[int, str, bytes]  # status, content type, body
JSON = "application/json"

def _plain(value: Any) -> Any:
    """Model objects as JSON: dataclasses as objects, label sets as sorted mappings. A
    field kept out of the repr (a Secret's data) is shown by its keys only."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) if f.repr
                else sorted(k for k, _ in getattr(value, f.name))
                for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, frozenset):
        items = sorted(value)
        if all(isinstance(i, tuple) and len(i) == 2 for i in items):
            return dict(items)
        return [_plain(i) for i in items]
    if isinstance(value, list | tuple):
        return [_plain(i) for i in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bytes):  # a directResponse body
        return value.decode("utf-8", "replace")
    return value

def _json(value: Any, status: int = 200) -> Response:
    # default=str: a debug view must answer whatever an object holds, not fail on it.
    return status, JSON, (json.dumps(value, indent=2, sort_keys=True, default=str)
                          + "\n").encode()

class HttpEndpoints:
    def __init__(self, store: Store, registry: SyncRegistry, cache: SnapshotCache,
                 metrics: Metrics,
                 source_problems: Callable[[], list[str]] = lambda: [],
                 analysis: LiveAnalysis | None = None) -> None:
        self.store, self.registry, self.cache, self.metrics = store, registry, cache, metrics
        self.source_problems = source_problems
        self.analysis = analysis
        self.routes: dict[str, Callable[[dict[str, list[str]]], Response]] = {
            "/healthz": lambda q: (200, "text/plain", b"ok\n"),
            "/readyz": self.readyz,
            "/metrics": lambda q: (200, "text/plain; version=0.0.4", self.metrics.render()),
            "/debug/syncz": self.syncz,
            "/debug/configz": self.configz,
            "/debug/config_dump": self.config_dump,
            "/debug/analyze": self.analyze,
        }

    def readyz(self, query: dict[str, list[str]]) -> Response:
        if not self.store.synced:
            waiting = ", ".join(sorted(self.store.pending_sources))
            return 503, "text/plain", f"not ready: initial load of {waiting}\n".encode()
        if self.cache.snapshot is None:
            return 503, "text/plain", b"not ready: no snapshot yet\n"
        return 200, "text/plain", b"ready\n"

    def syncz(self, query: dict[str, list[str]]) -> Response:
        proxies = sorted(self.registry.proxies.values(), key=lambda p: (p.node_id, p.stream_id))
        return _json([views.to_json(views.proxy_status(p, self.registry)) for p in proxies])

    def configz(self, query: dict[str, list[str]]) -> Response:
        objects: dict[str, dict[str, Any]] = {}
        for obj in self.store.objects():
            kind = type(obj).__name__
            objects.setdefault(kind, {})[f"{obj.meta.namespace}/{obj.meta.name}"] = _plain(obj)
        rejected = {str(k): {"reason": r.reason, "by": r.by,
                             "serving": "last good version" if r.serving is not None
                             else "nothing"}
                    for k, r in self.store.rejections.items()}
        return _json({"objects": objects,
                      "problems": self.store.problems() + self.source_problems(),
                      "rejected": rejected})

    def config_dump(self, query: dict[str, list[str]]) -> Response:
        node_id = (query.get("proxy") or [""])[0]
        proxy = newest(self.registry, node_id)
        if proxy is None:
            return _json({"error": f"no proxy with node id {node_id!r} is connected"}, 404)
        return _json(views.to_json(views.config_dump(*views.current(self.cache.snapshot, proxy))))

    def analyze(self, query: dict[str, list[str]]) -> Response:
        """The findings of the published mesh, as `controlplane analyze -o json` prints
        them; `?code=CP0101` and `?namespace=ns` (repeatable) keep only those."""
        if self.analysis is None or self.analysis.findings is None:
            return _json({"error": "not analysed yet: no snapshot published, or the first "
                                   "analysis is running"}, 503)
        codes = set(query.get("code", []))
        namespaces = set(query.get("namespace", []))
        return _json([as_dict(f) for f in self.analysis.findings
                      if (not codes or f.code.code in codes)
                      and (not namespaces or f.object.namespace in namespaces)])

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            url = urlsplit(target)
            route = self.routes.get(url.path)
            if method not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"only GET\n"
            elif route is None:
                status, ctype, body = 404, "text/plain", b"not found\n"
            else:
                status, ctype, body = route(parse_qs(url.query))
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
                      503: "Service Unavailable"}.get(status, "")
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                         .encode() + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError, ConnectionError):
            pass  # a broken or idle client; nothing to answer
        except Exception:
            log.exception("http_handler_failed")
        finally:
            writer.close()

    async def start(self, address: str) -> tuple[asyncio.Server, int]:
        host, _, port = address.rpartition(":")
        server = await asyncio.start_server(self.handle, host.strip("[]"), int(port))
        return server, server.sockets[0].getsockname()[1]

Starter = Callable[[str], Awaitable[tuple[asyncio.Server, int]]]
