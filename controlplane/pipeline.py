"""The push loop: store changes -> debounce -> Mesh -> translation -> snapshot cache.

`MeshTranslation` adapts the pure translator to the cache: which types every proxy
shares, which depend on the proxy (and on what about it), and each resource's name and
dependencies.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

import structlog
from envoy.config.cluster.v3 import cluster_pb2

from controlplane.model.mesh import Mesh
from controlplane.model.meta import Key
from controlplane.model.parse import Object
from controlplane.model.service import Service, ServicePort
from controlplane.store import Rejection, Store
from controlplane.translate import (
    ProxyView,
    build_listeners,
    route_names,
    service_assignments,
    service_clusters,
)
from controlplane.translate.guard import Failure, checked, route_suspects, service_suspects
from controlplane.translate.routes import plain_routes, route_bases, route_config_bodies
from controlplane.xds import types
from controlplane.xds.cache import InconsistentSnapshot, Snapshot, SnapshotCache

log = structlog.get_logger("controlplane.pipeline")

# What a failing unit can be blamed on: the routing objects people write. A Service and
# its endpoints describe what runs; rejecting one would take a workload off the mesh.
REJECTABLE = frozenset({"VirtualService", "DestinationRule"})

# Checks the listener/route pairing at publish time on behalf of every proxy.
PROBE = ProxyView(node_id="consistency-probe")


class MeshTranslation:
    """One Mesh's translation, computed lazily and reusing the previous translation's
    messages for everything the Mesh says did not change (`Mesh.dirty`,
    `Mesh.routes_changed`): the cache then reuses their serialized bytes too, so a push
    costs what changed, not the size of the mesh."""

    shared_types = frozenset({types.CLUSTER, types.ENDPOINT})

    def __init__(self, mesh: Mesh, previous: MeshTranslation | None = None) -> None:
        self.mesh = mesh
        self.previous = previous
        self._memo: dict[tuple[str, Hashable], list[Any]] = {}
        self._units: dict[str, tuple[list[Any], list[Any]]] = {}
        self._route_bases: list[Any] | None = None
        # Units whose translation raised or broke Envoy's constraints: withheld (see
        # translate/guard.py), for the push loop to trace to an object and reject.
        self.failures: list[Failure] = []
        if previous is not None and mesh.dirty is not None:
            # Every unit the Mesh did not mark dirty carries over as it is.
            self._units = {f: u for f, u in previous._units.items() if f not in mesh.dirty}
        # The previous translation's per-proxy sets, the dict itself: `finish` cuts the
        # chain back before most proxies' groups are asked for, and a group built for
        # the previous translation after that still counts. Reused whole when routes did
        # not change (an endpoint push must not rebuild every namespace's routes), and
        # the last good set of a group whose build fails.
        self._last_memo: dict[tuple[str, Hashable], list[Any]] = (
            previous._memo if previous is not None else {})
        if previous is not None and not mesh.routes_changed:
            self._route_bases = previous._route_bases

    def group_key(self, type_url: str, proxy: ProxyView) -> Hashable:
        if type_url == types.LISTENER:
            return proxy.bind_ip
        if type_url == types.ROUTE:
            return proxy.namespace
        return None

    def _unit(self, service: Service) -> tuple[list[Any], list[Any]]:
        fqdn = service.fqdn
        if fqdn not in self._units:  # dirty, or new: clean units were carried over
            mesh = self.mesh
            parts: list[list[Any]] = []

            def build() -> list[Any]:
                parts[:] = [service_clusters(mesh, service),
                            service_assignments(mesh, service)]
                return [*parts[0], *parts[1]]

            _, failure = checked(f"clusters of {fqdn}", service_suspects(mesh, service),
                                 build)
            if failure is None:
                self._units[fqdn] = (parts[0], parts[1])
            else:
                self.failures.append(failure)
                # The last unit that passed, else nothing: never a failing resource.
                old = self.previous._units.get(fqdn) if self.previous else None
                self._units[fqdn] = old if old is not None else ([], [])
        return self._units[fqdn]

    def _guard_routes(self, service: Service, port: ServicePort, number: int,
                      build: Callable[[], list[Any]]) -> list[Any]:
        routes, failure = checked(f"virtual host {service.fqdn}:{number}",
                                  route_suspects(self.mesh, service), build)
        if failure is None:
            return routes
        self.failures.append(failure)
        # Straight to the service's own cluster, which needs no object's help.
        fallback, _ = checked(failure.what, failure.suspects,
                              lambda: plain_routes(service, port))
        return fallback

    def prepare(self, probe: ProxyView) -> None:
        """Translate everything this Mesh changed that every proxy shares (dirty
        services, route bases, the probe's listeners), so `failures` is complete
        before anything is published."""
        services = self.mesh.services
        for fqdn in services if self.mesh.dirty is None else self.mesh.dirty:
            if fqdn in services:
                self._unit(services[fqdn])
        self.messages(types.LISTENER, self.group_key(types.LISTENER, probe))
        self.messages(types.ROUTE, self.group_key(types.ROUTE, probe))

    def messages(self, type_url: str, key: Hashable) -> list[Any]:
        memo_key = (type_url, key)
        if memo_key in self._memo:
            return self._memo[memo_key]
        if type_url in (types.CLUSTER, types.ENDPOINT):
            units = [self._unit(s) for s in self.mesh.services.values()]
            part = 0 if type_url == types.CLUSTER else 1
            out: list[Any] = [m for unit in units for m in unit[part]]
        elif not self.mesh.routes_changed and memo_key in self._last_memo:
            out = self._last_memo[memo_key]
        else:
            try:
                out = self._per_proxy(type_url, key)
            except Exception:  # a translator bug: the last good set, never a crash
                log.exception("translation_failed", type=types.short(type_url), key=key)
                out = self._last_memo.get(memo_key, [])
        self._memo[memo_key] = out
        return out

    def _per_proxy(self, type_url: str, key: Hashable) -> list[Any]:
        if type_url == types.LISTENER:
            listeners, failure = checked(f"listeners for {key}", (),
                                         lambda: build_listeners(self.mesh, str(key)))
            if failure is None:
                return listeners
            # No object to blame (listeners come from Services alone): the group's last
            # good set, reported.
            log.error("unit_withheld", unit=failure.what, by=failure.by,
                      reason=failure.reason)
            return self._last_memo.get((type_url, key), [])
        if self._route_bases is None:  # shared by every namespace's configurations
            self._route_bases = route_bases(self.mesh, self._guard_routes)
        return route_config_bodies(self._route_bases, str(key))

    def delta(self, type_url: str) -> tuple[list[Any], set[str]] | None:
        """For a shared type, what differs from the previous translation: the messages of
        the dirty services and the names that are gone. None: compare everything."""
        prev = self.previous
        if prev is None or self.mesh.dirty is None or type_url not in self.shared_types:
            return None
        part = 0 if type_url == types.CLUSTER else 1
        changed: list[Any] = []
        removed: set[str] = set()
        for fqdn in self.mesh.dirty:
            service = self.mesh.services.get(fqdn)
            new = self._unit(service)[part] if service is not None else []
            old = prev._units.get(fqdn, ([], []))[part]
            changed.extend(new)
            removed |= ({types.resource_name(type_url, m) for m in old}
                        - {types.resource_name(type_url, m) for m in new})
        return changed, removed

    def finish(self) -> None:
        """Once published: every service's unit built (the next translation carries them
        over) and the chain back cut, so only one translation is kept."""
        for service in self.mesh.services.values():
            self._unit(service)
        self.previous = None

    def name_of(self, type_url: str, message: Any) -> str:
        return types.resource_name(type_url, message)

    def deps_of(self, type_url: str, message: Any) -> tuple[str, ...]:
        if type_url == types.CLUSTER:
            if message.type == cluster_pb2.Cluster.EDS:
                return (message.eds_cluster_config.service_name or message.name,)
            return ()
        if type_url == types.LISTENER:
            return tuple(route_names(message))
        return ()


class PushLoop:
    def __init__(self, store: Store, cache: SnapshotCache, *, quiet: float = 0.1,
                 max_delay: float = 1.0) -> None:
        self.store = store
        self.cache = cache
        self.quiet = quiet
        self.max_delay = max_delay
        self._problems: set[str] = set()
        self._translation: MeshTranslation | None = None
        self._withheld_seen: set[str] = set()
        self.withheld: list[Failure] = []  # units of the last publish no rejection fixed
        # Per published generation, what each changed object was before it: where a
        # NACK quarantine goes back to (see quarantine.py).
        self.committed: deque[tuple[int, dict[Key, Object | None]]] = deque(maxlen=64)
        # Called after each publish with (snapshot, mesh, first change seen or None,
        # monotonic start of the publish, its duration in seconds).
        self.on_publish: list[Callable[[Snapshot, Mesh, float | None, float, float],
                                       None]] = []

    def publish(self) -> bool:
        started = time.monotonic()
        change_seen = self.store.first_unseen_change
        self.store.first_unseen_change = None
        # A publish allocates in a burst and frees little: with the cyclic GC running
        # through it, a full translation took 25-45 % longer. It is collected afterwards.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._publish(started, change_seen)
        finally:
            if gc_was_enabled:
                gc.enable()

    # Rejections per publish at most: each one removes a suspect, so this bounds the
    # work a publish can do however many objects fail at once; the rest wait one push.
    MAX_REJECTIONS = 64

    def _translate(self) -> tuple[Mesh, MeshTranslation]:
        """Build and translate the Mesh; while a unit fails, reject the routing object
        most likely behind it (changed since the last publish) and build again without
        it. A failure no such object explains keeps that unit's last good messages (or
        none) and is reported: a Service or its endpoints are the cluster's truth and
        are never rejected, only the unit they made is withheld."""
        rejected = 0
        while True:
            mesh = self.store.build()
            translation = MeshTranslation(mesh, self._translation)
            translation.prepare(PROBE)
            progress = False
            for failure in translation.failures:
                key = next((k for k in failure.suspects if k.kind in REJECTABLE
                            and self.store.changed_since_published(k)), None)
                rejection = (self.store.reject(key, f"{failure.what}: {failure.reason}",
                                               failure.by)
                             if key is not None and rejected < self.MAX_REJECTIONS else None)
                if rejection is not None:
                    rejected += 1
                    progress = True
                    self._report_rejection(rejection)
            if not progress:
                self.withheld = list(translation.failures)  # none could be rejected
                for failure in self.withheld:
                    self._withheld(failure)
                return mesh, translation

    def _publish(self, started: float, change_seen: float | None) -> bool:
        try:
            mesh, translation = self._translate()
            snap = self.cache.publish(translation, PROBE)
            translation.finish()
            self._translation = translation
            before = self.store.commit(
                mesh, [f"{f.what}: withheld ({f.by}): {f.reason}" for f in self.withheld])
            self.committed.append((snap.generation, before))
        except InconsistentSnapshot as exc:
            log.error("snapshot_rejected", reason=str(exc))
            return False
        except Exception:  # a bug outside any unit must not take the server down
            log.exception("publish_failed")
            return False
        took = time.monotonic() - started
        self._report_problems(mesh)
        log.info("snapshot", generation=snap.generation, services=len(mesh.services),
                 took_ms=round(took * 1000, 2))
        for notify in self.on_publish:
            notify(snap, mesh, change_seen, started, took)
        return True

    def _report_rejection(self, rejection: Rejection) -> None:
        log.error("object_rejected", object=str(rejection.key), by=rejection.by,
                  reason=rejection.reason,
                  serving="last good version" if rejection.serving is not None
                  else "nothing (no good version yet)")

    def _withheld(self, failure: Failure) -> None:
        message = f"{failure.what}: {failure.reason}"
        if message not in self._withheld_seen:
            self._withheld_seen.add(message)
            log.error("unit_withheld", unit=failure.what, by=failure.by,
                      suspects=[str(k) for k in failure.suspects], reason=failure.reason)

    def _report_problems(self, mesh: Mesh) -> None:
        current = set(mesh.problems)
        for problem in sorted(current - self._problems):
            log.warning("mesh_problem", problem=problem)
        for problem in sorted(self._problems - current):
            log.info("mesh_problem_resolved", problem=problem)
        self._problems = current

    async def run(self) -> None:
        await self.store.wait_synced()
        self.store.changed.clear()
        self.publish()
        # The initial load is long-lived: keep the cyclic GC from rescanning it on every
        # later push (full collections over a large heap showed up as push latency).
        gc.freeze()
        while True:
            await self.store.changed.wait()
            await debounce(self.store.changed, self.quiet, self.max_delay)
            self.publish()


async def debounce(changed: asyncio.Event, quiet: float, max_delay: float) -> None:
    """Called once `changed` is set: returns after `quiet` seconds without a change, or
    `max_delay` seconds after the call however often it changes, whichever comes first.
    A burst of edits (a `kubectl apply` of many objects, a rollout) makes one push, and
    a stream that never pauses still pushes at least once every `max_delay`. Each change
    seen is cleared, so the caller's next wait is for a change made after the return."""
    loop = asyncio.get_running_loop()
    first = loop.time()
    while True:
        changed.clear()
        remaining = max_delay - (loop.time() - first)
        if remaining <= 0:
            return
        try:
            await asyncio.wait_for(changed.wait(), min(quiet, remaining))
        except TimeoutError:
            return
