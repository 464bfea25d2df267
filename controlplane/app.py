"""The control plane wired together: sources -> store -> push loop -> cache -> ADS, plus
the sync registry, metrics and the admin surfaces. `controlplane serve` runs one; tests
run several in one process."""

from __future__ import annotations

import asyncio
import os
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import structlog
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge

from controlplane.admin.analysis import LiveAnalysis, SourceReport
from controlplane.admin.http import HttpEndpoints
from controlplane.admin.metrics import Metrics
from controlplane.admin.service import AdminService, add_to_server
from controlplane.analysis import Locate
from controlplane.model.mesh import Mesh
from controlplane.model.meta import Key
from controlplane.pipeline import PushLoop
from controlplane.quarantine import Quarantine
from controlplane.status.convergence import Convergence
from controlplane.status.sync import SyncRegistry
from controlplane.store import Store
from controlplane.translation import PROBE
from controlplane.webhook.admission import Admission
from controlplane.webhook.server import CertificateFiles, WebhookServer
from controlplane.xds import types
from controlplane.xds.cache import Snapshot, SnapshotCache
from controlplane.xds.server import EXCLUSIVE_PORT, AdsServer, add_port, start_grpc_server

log = structlog.get_logger("controlplane")


class Source(Protocol):
    async def run(self) -> None: ...


@dataclass
class Settings:
    xds_address: str = "127.0.0.1:15010"
    admin_address: str = "127.0.0.1:15011"  # the admin API: loopback unless asked
    http_address: str = "127.0.0.1:15014"
    debounce_quiet: float = 0.1
    debounce_max: float = 1.0
    answer_timeout: float = 5.0
    stale_after: float = 5.0
    large_push_limit: int = 128  # see xds.flow.LargeResponses
    nack_quarantine: bool = True  # see quarantine.py
    # The validating admission webhook (webhook/): HTTPS at /validate when an address is
    # given; the certificate and key files are read again when they change.
    webhook_address: str = ""
    webhook_cert: str = ""
    webhook_key: str = ""


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store()
        self.cache = SnapshotCache()
        self.registry = SyncRegistry(stale_after=settings.stale_after)
        self.ads = AdsServer(self.cache, self.registry, answer_timeout=settings.answer_timeout,
                             large_responses=settings.large_push_limit)
        self.push = PushLoop(self.store, self.cache, quiet=settings.debounce_quiet,
                             max_delay=settings.debounce_max)
        self.metrics = Metrics()
        self.metrics.attach(self.registry)
        self.metrics.large_held.set_function(lambda: self.ads.large.held)
        self.metrics.large_waiting.set_function(lambda: self.ads.large.waiting)
        self.convergence = Convergence(self.registry, self.metrics.convergence.observe)
        self.analysis = LiveAnalysis(self.store, self.metrics, self._source_report,
                                     self._source_locator,
                                     report_version=self._source_report_version)
        self.push.on_publish.append(self._published)
        self.quarantine = (
            Quarantine(self.store, self.registry, lambda: self.push.committed,
                       on_change=lambda _: self._count_rejections())
            if settings.nack_quarantine else None)
        self.rejected = Gauge(
            "controlplane_rejected_objects", "objects not served as written, by what "
            "refused them: translation (it raised), constraints (Envoy would reject the "
            "result), envoy (a proxy NACKed it); their last good version, or nothing, is "
            "served instead", ["by"], registry=self.metrics.registry)
        self._count_rejections()
        self.webhook_reviews = PromCounter(
            "controlplane_webhook_reviews", "AdmissionReviews the webhook answered, by "
            "outcome: allowed, refused (invalid), bad_review (not an AdmissionReview: "
            "400), error (500)", ["outcome"], registry=self.metrics.registry)
        self.sources: list[Source] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.xds_port = self.admin_port = self.http_port = self.webhook_port = 0
        self.webhook: WebhookServer | None = None
        self._servers: list[grpc.aio.Server] = []
        self._http: asyncio.Server | None = None

    def _published(self, snap: Snapshot, mesh: Mesh, change_seen: float | None,
                   started: float, took: float) -> None:
        self.metrics.push_duration.observe(took)
        if change_seen is not None:
            self.metrics.debounce.observe(max(0.0, started - change_seen))
        self.metrics.generation.set(snap.generation)
        for t in types.PUSH_ORDER:
            self.metrics.resources.labels(type=types.short(t)).set(
                len(snap.resources(t, PROBE).items))
        self.convergence.published(snap.generation, change_seen)
        self._count_rejections()
        self.analysis.published(snap.generation)

    def _count_rejections(self) -> None:
        by = Counter(r.by for r in self.store.rejections.values())
        for reason in ("translation", "constraints", "envoy"):
            self.rejected.labels(by=reason).set(by[reason])

    def _source_problems(self) -> list[str]:
        """What the sources refused or could not read (files over the size limit,
        unknown kinds, conflicting duplicates), for /debug/configz."""
        out: list[str] = []
        for source in self.sources:
            problems = getattr(source, "problems", None)
            if callable(problems):
                out.extend(problems())
        return out

    def _source_report(self) -> SourceReport:
        """What the sources know that the mesh does not say, for the analysis: objects
        they refused (CP0001), kinds not served (CP0003/CP0004), objects several files
        define differently (CP0005). Taken on the loop."""
        refused: dict[Key, tuple[str, ...]] = {}
        unserved: dict[Key, bool] = {}
        duplicates: dict[Key, tuple[str, tuple[str, ...], str]] = {}
        first_lines: list[Callable[[str, Key], int]] = []
        for source in self.sources:
            for method, into in (("invalid", refused), ("unserved", unserved),
                                 ("duplicates", duplicates)):
                if callable(report := getattr(source, method, None)):
                    into.update(report())
            if callable(lines := getattr(source, "first_lines", None)):
                first_lines.append(lines())

        def first_line(file: str, key: Key) -> int:
            return next((n for lines in first_lines if (n := lines(file, key))), 0)
        return SourceReport(refused, unserved, duplicates,
                            first_line if first_lines else None)

    def _source_report_version(self) -> tuple[object, ...]:
        """Changes whenever `_source_report` may have: cheap, for the analysis to look
        at once a second."""
        return tuple(version() if callable(version := getattr(src, "report_version", None))
                     else None for src in self.sources)

    def _source_locator(self) -> Locate | None:
        """Where the sources' objects are written (file, line), for the analysis: the
        first source that knows. Taken on the loop; the result is used in a thread."""
        locators = [loc() for source in self.sources
                    if callable(loc := getattr(source, "locator", None))]
        if not locators:
            return None

        def where(key: Key, path: str) -> tuple[str, int]:
            for locate in locators:
                found = locate(key, path)
                if found[0]:
                    return found
            return "", 0
        return where

    def _serves(self, namespace: str, kind: str) -> bool:
        """Whether every source that scopes what it serves (`--namespaces`, `--revision`)
        serves this namespace: the store then holds the mesh an object there is part of."""
        for src in self.sources:
            served = getattr(src, "served", None)
            if callable(served) and not served(namespace, kind):
                return False
        return True

    async def start(self) -> None:
        """Listen on every address, then start the sources, the push and the analysis.
        An address that cannot be listened on raises CannotListen, naming it; what was
        already listening is left for `stop`."""
        s = self.settings
        with _listening("xds", s.xds_address):
            xds, self.xds_port = await start_grpc_server([self.ads.handler()], s.xds_address)
        self._servers.append(xds)
        admin = grpc.aio.server(options=EXCLUSIVE_PORT)
        add_to_server(admin, AdminService(self.registry, self.cache, self.store))
        self._servers.append(admin)
        with _listening("admin", s.admin_address):
            self.admin_port = add_port(admin, s.admin_address)
        await admin.start()
        http = HttpEndpoints(self.store, self.registry, self.cache, self.metrics,
                             source_problems=self._source_problems, analysis=self.analysis)
        with _listening("http", s.http_address):
            self._http, self.http_port = await http.start(s.http_address)
        if s.webhook_address:
            self.webhook = WebhookServer(
                Admission(self.store, self._serves),
                CertificateFiles(s.webhook_cert, s.webhook_key),
                on_review=lambda outcome: self.webhook_reviews.labels(outcome).inc())
            with _listening("webhook", s.webhook_address):
                self.webhook_port = await self.webhook.start(s.webhook_address)
        self.tasks = [asyncio.create_task(src.run(), name=type(src).__name__)
                      for src in self.sources]
        self.tasks.append(asyncio.create_task(self.push.run(), name="push"))
        self.tasks.append(asyncio.create_task(self.analysis.run(), name="analysis"))
        log.info("serving", xds_port=self.xds_port, admin_port=self.admin_port,
                 http_port=self.http_port, webhook_port=self.webhook_port or None,
                 sources=[type(x).__name__ for x in self.sources])

    async def stop(self, phase_timeout: float = 3.0) -> None:
        """Each phase is bounded: a stop that hangs (it happened, rarely, in tests; where
        is not known yet) must not keep a SIGTERMed process alive. A phase that runs
        over is logged with its name and left behind."""
        for task in self.tasks:
            task.cancel()
        await self._bounded("sources_and_push", phase_timeout,
                            asyncio.gather(*self.tasks, return_exceptions=True))
        if pending := [t.get_name() for t in self.tasks if not t.done()]:
            # Which task ignored its cancellation: the rare hang has no known cause yet.
            log.warning("stop_tasks_pending", tasks=pending)
        if self._http is not None:
            self._http.close()
        if self.webhook is not None:
            self.webhook.close()
        await self._bounded("grpc_servers", phase_timeout,
                            asyncio.gather(*(srv.stop(grace=0.5) for srv in self._servers)))

    @staticmethod
    async def _bounded(phase: str, timeout: float, work: Any) -> None:
        # asyncio.wait, not wait_for: wait_for waits for the cancelled work to finish.
        done, _ = await asyncio.wait({asyncio.ensure_future(work)}, timeout=timeout)
        if not done:
            log.warning("stop_phase_timed_out", phase=phase, timeout_s=timeout)


class CannotListen(Exception):
    """An address given to serve cannot be listened on (in use, not this machine's)."""

    def __init__(self, listener: str, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address} ({listener}): {reason}")
        self.listener = listener
        self.address = address
        self.reason = reason


@contextmanager
def _listening(listener: str, address: str) -> Iterator[None]:
    """Binding `address` inside: a failure becomes CannotListen, with the OS's reason."""
    try:
        yield
    except OSError as e:  # asyncio's servers
        # asyncio's strerror repeats the address; a lookup error (gaierror) has a negative
        # errno that os.strerror cannot name, and its own strerror
        reason = os.strerror(e.errno) if e.errno and e.errno > 0 else e.strerror or str(e)
        raise CannotListen(listener, address, reason) from e
    except RuntimeError as e:  # grpc's "Failed to bind": it does not say why
        raise CannotListen(listener, address, _bind_error(address) or str(e)) from e


def _bind_error(address: str) -> str:
    """Why binding `address` fails, as the OS says it, found by trying: grpc only says
    that it failed. "" if it binds now, or the address is not host:port."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        family, kind, proto, _, where = infos[0]
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(where)
    except OSError as e:
        return e.strerror or str(e)
    except (ValueError, IndexError):  # not host:port (a unix: address)
        return ""
    return ""
