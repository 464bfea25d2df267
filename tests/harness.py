"""Real parts for tests: upstream HTTP servers on loopback addresses, real Envoy
processes, and the control plane running in a thread of the test process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from controlplane.app import App, Settings
from controlplane.samples.traffic import Client
from controlplane.samples.workload import Workload
from controlplane.sidecar import Envoy, envoy_binary, free_port
from controlplane.sources.files import FileSource
from controlplane.sources.kubernetes import KubernetesSource
from controlplane.translation import PROBE, MeshTranslation
from controlplane.xds import types
from tests.ads_client import AdsClient


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # retried until the deadline, then reported
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_exc!r})" if last_exc else ""))


# -- upstreams --------------------------------------------------------------------------------

# A stand-in pod (the sample workload the manifests run): answers with its identity as JSON.
Upstream = Workload

__all__ = ["Client", "ControlPlane", "Envoy", "Upstream", "envoy_binary", "free_port", "get",
           "http_request", "iter_ips", "wait_until", "write_yaml"]


# -- envoy ------------------------------------------------------------------------------------

def serving(log: Path, timeout: float = 30.0) -> dict[str, Any]:
    """The fields of `controlplane serve`'s "serving" line in its JSON log (the ports it
    got: start it on port 0), once it is there."""
    def line() -> dict[str, Any] | None:
        for text in log.read_text().splitlines():
            if text.startswith("{") and (event := json.loads(text))["event"] == "serving":
                return event
        return None
    return wait_until(line, timeout, what="serve's serving line")


def http_request(ip: str, port: int, host: str, path: str = "/",
                 headers: dict[str, str] | None = None, method: str = "GET",
                 timeout: float = 5.0) -> tuple[int, dict[str, str], Any]:
    """One HTTP/1.1 request, the path sent as written: (status, the response headers with
    lowercased names, the body as JSON or else text)."""
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request(method, path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        text = resp.read().decode()
        got = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    try:
        return resp.status, got, json.loads(text)
    except ValueError:
        return resp.status, got, text


def get(ip: str, port: int, host: str, path: str = "/", headers: dict[str, str] | None = None,
        timeout: float = 5.0) -> tuple[int, dict[str, Any] | str]:
    status, _, body = http_request(ip, port, host, path, headers, timeout=timeout)
    return status, body


# -- the control plane in a thread ------------------------------------------------------------

class ControlPlane:
    """The wired control plane (controlplane.app.App, as `controlplane serve` runs it) on
    its own event loop thread, on free ports, with handles for tests to reach inside."""

    def __init__(self, config_dir: Path | None = None, *, poll_interval: float = 0.05,
                 quiet: float = 0.05, max_delay: float = 0.5, answer_timeout: float = 5.0,
                 stale_after: float = 5.0, large_push_limit: int = 128,
                 pending_sources: tuple[str, ...] = (),
                 kubernetes: dict[str, Any] | None = None,
                 webhook: tuple[Path, Path] | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.config_dir = config_dir

        async def setup() -> None:
            self.app = App(Settings(
                xds_address="127.0.0.1:0", admin_address="127.0.0.1:0",
                http_address="127.0.0.1:0", debounce_quiet=quiet, debounce_max=max_delay,
                answer_timeout=answer_timeout, stale_after=stale_after,
                large_push_limit=large_push_limit,
                # The admission webhook, with this certificate and key: (cert, key).
                webhook_address="127.0.0.1:0" if webhook else "",
                webhook_cert=str(webhook[0]) if webhook else "",
                webhook_key=str(webhook[1]) if webhook else ""))
            self.store, self.cache = self.app.store, self.app.cache
            self.registry, self.ads = self.app.registry, self.app.ads
            for name in pending_sources:  # sources that will report their initial load later
                self.store.register_source(name)
            if config_dir is not None:
                self.files = FileSource(self.store, config_dir, interval=poll_interval)
                self.app.sources.append(self.files)
            if kubernetes is not None:  # KubernetesSource's arguments, api_client included
                self.kube = KubernetesSource(self.store, **kubernetes)
                self.app.sources.append(self.kube)
            await self.app.start()
            self.port = self.app.xds_port
            self.admin_port = self.app.admin_port
            self.http_port = self.app.http_port
            self.webhook_port = self.app.webhook_port

        self.call(setup())

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def run(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run a plain function on the loop thread (the store is not thread-safe)."""
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def wrapper() -> None:
            try:
                fut.set_result(fn())
            except Exception as exc:
                fut.set_exception(exc)
        self.loop.call_soon_threadsafe(wrapper)
        return fut.result(timeout)

    def generation(self) -> int:
        return self.run(lambda: self.cache.snapshot.generation if self.cache.snapshot else 0)

    def cluster_names(self) -> set[str]:
        def names() -> set[str]:
            snap = self.cache.snapshot
            return set(snap.for_key(types.CLUSTER, None).items) if snap else set()
        return self.run(names)

    async def _settled(self, client: AdsClient, timeout: float) -> int:
        """Wait until the server has nothing more to say to `client` on its own: every
        change delivered to the store is published (or nothing will be until the sources
        finish loading), the client's stream handled every request the client wrote, and
        its sender is idle (AdsServer's Stream.idle). Returns how many responses the
        stream wrote that the client has not read."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            streams = [s for s in self.ads.streams.values()
                       if s.proxy is not None and s.proxy.node_id == client.node.id]
            stream = max(streams, key=lambda s: s.id) if streams else None
            settled = not self.store.synced or not self.store.unpublished
            if (settled and stream is not None and stream.handled >= client.written
                    and stream.idle):
                return stream.written - client.received
            if loop.time() > deadline:
                raise AssertionError(
                    f"the stream of {client.node.id!r} did not settle in {timeout} s "
                    f"(store settled: {settled}, stream: {stream and vars(stream)})")
            await asyncio.sleep(0.005)

    def silent(self, client: AdsClient, timeout: float = 10.0) -> bool:
        """The server sent `client` nothing it has not read, and will send nothing more
        until something changes: decided on the server's state, not on a wait."""
        async def check() -> bool:
            if await self._settled(client, timeout):
                resp = await client.recv()
                version = getattr(resp, "version_info", None) or resp.system_version_info
                raise AssertionError(f"expected no response, got "
                                     f"{types.short(resp.type_url)} version {version}")
            return True
        return bool(self.call(check(), timeout + 5))

    def drain(self, client: AdsClient, timeout: float = 10.0) -> list[Any]:
        """Read and ACK whatever the server sends `client` until it is silent."""
        async def run() -> list[Any]:
            seen = []
            while await self._settled(client, timeout):
                resp = await client.recv()
                seen.append(resp)
                await client.ack_any(resp)
            return seen
        return list(self.call(run(), timeout * 4))

    def publish(self, source: MeshTranslation) -> None:
        self.run(lambda: self.cache.publish(source, PROBE))

    def stop(self) -> None:
        try:
            self.call(self.app.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


def write_yaml(path: Path, *docs: dict[str, Any]) -> None:
    """Write atomically, as editors and `kubectl` tooling usually do."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    tmp.replace(path)


def iter_ips(start: int = 2) -> Iterator[str]:
    n = start
    while True:
        yield f"127.0.{n // 250}.{n % 250 + 2}"
        n += 1


def metric(text: str, name: str) -> float:
    """One sample's value from a Prometheus text exposition (`/metrics`)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")
