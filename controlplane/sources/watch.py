"""List, then watch: one Kubernetes collection mirrored through a flaky connection.

The pattern of client-go's reflector and kopf's watcher, on the official `kubernetes`
client's transport (its configuration, authentication and TLS):

1. LIST the collection; hand the complete result over as a replacement, so objects
   deleted while nobody watched disappear too. The list's resourceVersion is where
   the watch starts: nothing between the two is missed.
2. WATCH from that resourceVersion with bookmarks, each event moving the position on.
   A watch ends normally after `timeoutSeconds`; it is reopened from the position.
3. `410 Gone` (as an ERROR event mid-stream or as the HTTP status) means the position
   was compacted away: LIST again. Any other failure (connection refused, reset, a
   stream cut mid-line, an ERROR event, a stalled stream caught by the read timeout)
   reopens the watch from the same position after a capped, jittered backoff; if that
   keeps failing the next attempt relists.
4. The backoff starts over as soon as the server answers again (a LIST or a watch
   request that succeeds), and is capped at a second: after an API-server outage every
   watcher is back within about a second of the server's return, not after a backoff
   grown during the outage. The way back is logged (`watch_recovered`).

Runs in a thread of its own: the client is blocking, and a stalled API server must
never stall the event loop. Results go out through two callbacks.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("controlplane.sources.watch")


@dataclass(frozen=True)
class Collection:
    api_version: str  # "v1", "discovery.k8s.io/v1", "networking.istio.io/v1"
    kind: str
    plural: str
    namespaced: bool = True
    field_selector: str = ""  # the API server filters (e.g. Secrets by type)

    def path(self, namespace: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if namespace and self.namespaced:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class Gone(ApiError):
    """The resourceVersion we watch from is older than the server keeps: relist."""

    def __init__(self, message: str) -> None:
        super().__init__(410, message)


class Backoff:
    """Capped exponential backoff with full jitter: retries of many watchers after an
    API-server restart spread out instead of arriving together. The cap bounds how long
    a watcher stays away after the server is back; a refused connection costs the server
    nothing, so a low one is cheap. The base keeps a server that answers and then fails
    every stream (the backoff starts over on each answer) at a few requests a second."""

    def __init__(self, base: float = 0.2, cap: float = 1.0) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap, self.base * 2 ** (self.failures - 1)))

    def reset(self) -> None:
        self.failures = 0


class Transport:
    """GET requests through the official client's configured ApiClient."""

    def __init__(self, api_client: Any) -> None:
        self.api = api_client

    def get(self, path: str, query: list[tuple[str, str]], timeout: tuple[float, float]
            ) -> Any:
        method, url, headers, body, post = self.api.param_serialize(
            "GET", path, query_params=query, header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        resp = self.api.call_api(method, url, headers, body, post, _request_timeout=timeout)
        if resp.status != 200:
            data = resp.response.data
            resp.response.release_conn()
            message = _status_message(data) or resp.reason or ""
            raise Gone(message) if resp.status == 410 else ApiError(resp.status, message)
        return resp.response  # a urllib3 response, not yet read

    def get_json(self, path: str, query: list[tuple[str, str]] | None = None,
                 timeout: tuple[float, float] = (10.0, 60.0)) -> dict[str, Any]:
        resp = self.get(path, query or [], timeout)
        try:
            return json.loads(resp.data)
        finally:
            resp.release_conn()


def _status_message(data: bytes) -> str:
    try:
        return str(json.loads(data).get("message", ""))
    except (ValueError, AttributeError):
        return data[:200].decode("utf-8", "replace")


def iter_lines(resp: Any, chunk: int = 65536) -> Iterator[bytes]:
    """Complete lines of a chunked watch stream. A last line without its newline is a
    stream cut mid-event: dropped, and the watch resumes from the last whole event."""
    buffer = b""
    for data in resp.stream(chunk, decode_content=True):
        buffer += data
        *lines, buffer = buffer.split(b"\n")
        yield from (line for line in lines if line.strip())
    if buffer.strip():
        raise ConnectionError(f"watch stream cut mid-event ({len(buffer)} bytes dropped)")


ListCallback = Callable[[list[dict[str, Any]]], None]
EventCallback = Callable[[str, dict[str, Any]], None]


class Watcher:
    def __init__(self, transport: Transport, collection: Collection, *,
                 namespace: str | None = None, label_selector: str = "",
                 field_selector: str = "", on_list: ListCallback, on_event: EventCallback,
                 stop: threading.Event, watch_timeout: int = 300,
                 read_timeout: float | None = None, connect_timeout: float = 10.0,
                 backoff: Backoff | None = None) -> None:
        self.transport = transport
        self.collection = collection
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.on_list = on_list
        self.on_event = on_event
        self.stop = stop
        self.watch_timeout = watch_timeout
        # A real API server ends the stream at timeoutSeconds and sends bookmarks; a
        # stream silent well past that is stalled (a dead peer, a dropped NAT entry).
        self.read_timeout = read_timeout if read_timeout is not None else watch_timeout + 30
        self.connect_timeout = connect_timeout
        self.backoff = backoff or Backoff()
        self.resource_version: str | None = None
        self.lists = 0  # how many complete LISTs were delivered (tests read it)
        self.name = f"{collection.kind}/{namespace or '*'}"
        # Failures in a row without progress (an event, a normal end, a LIST): past a few
        # the position itself is suspect and the next attempt relists.
        self.failures = 0
        # The outage in progress: when its first failure happened and how many attempts
        # failed since (the backoff's count restarts on every answer, this one does not).
        self.failing_since: float | None = None
        self.failed_attempts = 0
        self.recovered_at: float | None = None  # monotonic time of the last recovery

    def _query(self) -> list[tuple[str, str]]:
        field_selector = self.field_selector or self.collection.field_selector
        return [(name, value) for name, value in (("labelSelector", self.label_selector),
                                                  ("fieldSelector", field_selector))
                if value]

    def list(self) -> None:
        doc = self.transport.get_json(self.collection.path(self.namespace), self._query(),
                                      (self.connect_timeout, 60.0))
        items = []
        for item in doc.get("items") or []:
            # LIST items come without apiVersion and kind; watch events have them.
            item.setdefault("apiVersion", self.collection.api_version)
            item.setdefault("kind", self.collection.kind)
            items.append(item)
        self._answered()
        self.failures = 0  # a fresh position
        self.on_list(items)
        self.resource_version = str(doc.get("metadata", {}).get("resourceVersion", ""))
        self.lists += 1
        log.debug("listed", collection=self.name, items=len(items),
                  resource_version=self.resource_version)

    def watch(self) -> None:
        query = [*self._query(), ("watch", "true"), ("allowWatchBookmarks", "true"),
                 ("timeoutSeconds", str(self.watch_timeout)),
                 ("resourceVersion", self.resource_version or "")]
        resp = self.transport.get(self.collection.path(self.namespace), query,
                                  (self.connect_timeout, self.read_timeout))
        self._answered()
        try:
            for line in iter_lines(resp):
                if self.stop.is_set():
                    return
                self._event(json.loads(line))
                self.failures = 0  # the stream works again
        finally:
            resp.release_conn()
        self.failures = 0  # ended normally (timeoutSeconds)

    def _answered(self) -> None:
        """The server answered a request: the backoff starts over, and an outage ends."""
        self.backoff.reset()
        if self.failing_since is None:
            return
        now = time.monotonic()
        log.info("watch_recovered", collection=self.name, kind=self.collection.kind,
                 namespace=self.namespace or "*",
                 outage_s=round(now - self.failing_since, 3),
                 attempts=self.failed_attempts)
        self.failing_since, self.failed_attempts = None, 0
        self.recovered_at = now

    def _event(self, event: dict[str, Any]) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            code, message = obj.get("code"), obj.get("message", "")
            if code == 410:
                raise Gone(message)
            raise ApiError(int(code or 500), message)
        version = obj.get("metadata", {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            obj.setdefault("apiVersion", self.collection.api_version)
            obj.setdefault("kind", self.collection.kind)
            self.on_event(kind, obj)
        if version:
            self.resource_version = str(version)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if self.resource_version is None:
                    self.list()
                self.watch()  # returns when the server ends the stream: reopen at once
            except Gone as exc:
                log.info("watch_expired", collection=self.name, reason=str(exc))
                self.resource_version = None
            except Exception as exc:  # every other failure: back off, then resume
                if self.stop.is_set():
                    return  # shutting down: the failure is ours
                delay = self.backoff.next()
                self.failures += 1
                if self.failing_since is None:
                    self.failing_since = time.monotonic()
                self.failed_attempts += 1
                if self.failures > 3:
                    # Something about the position may be wrong (a server restored from
                    # a backup): a fresh list is the safe way back.
                    self.resource_version = None
                log.warning("watch_failed", collection=self.name,
                            error=f"{type(exc).__name__}: {exc}"[:300],
                            retry_in_s=round(delay, 2), failures=self.failures)
                self.stop.wait(delay)


def run_in_thread(watcher: Watcher) -> threading.Thread:
    thread = threading.Thread(target=watcher.run, name=f"watch-{watcher.name}", daemon=True)
    thread.start()
    return thread
