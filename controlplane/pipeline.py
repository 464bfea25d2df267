"""The push loop: store changes -> debounce -> Mesh -> translation -> snapshot cache.

`MeshTranslation` adapts the pure translator to the cache: which types every proxy
shares, which depend on the proxy (and on what about it), and each resource's name and
dependencies.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Hashable
from typing import Any

import structlog
from envoy.config.cluster.v3 import cluster_pb2

from controlplane.model.mesh import Mesh
from controlplane.model.service import Service
from controlplane.store import Store
from controlplane.translate import (
    ProxyView,
    build_listeners,
    route_names,
    service_assignments,
    service_clusters,
)
from controlplane.translate.routes import route_bases, route_config_bodies
from controlplane.xds import types
from controlplane.xds.cache import InconsistentSnapshot, Snapshot, SnapshotCache

log = structlog.get_logger("controlplane.pipeline")

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
        if previous is not None and mesh.dirty is not None:
            # Every unit the Mesh did not mark dirty carries over as it is.
            self._units = {f: u for f, u in previous._units.items() if f not in mesh.dirty}

    def group_key(self, type_url: str, proxy: ProxyView) -> Hashable:
        if type_url == types.LISTENER:
            return proxy.bind_ip
        if type_url == types.ROUTE:
            return proxy.namespace
        return None

    def _unit(self, service: Service) -> tuple[list[Any], list[Any]]:
        fqdn = service.fqdn
        if fqdn not in self._units:  # dirty, or new: clean units were carried over
            self._units[fqdn] = (service_clusters(self.mesh, service),
                                 service_assignments(self.mesh, service))
        return self._units[fqdn]

    def messages(self, type_url: str, key: Hashable) -> list[Any]:
        memo_key = (type_url, key)
        if memo_key in self._memo:
            return self._memo[memo_key]
        prev = self.previous
        if type_url in (types.CLUSTER, types.ENDPOINT):
            units = [self._unit(s) for s in self.mesh.services.values()]
            part = 0 if type_url == types.CLUSTER else 1
            out: list[Any] = [m for unit in units for m in unit[part]]
        elif (prev is not None and not self.mesh.routes_changed
              and memo_key in prev._memo):
            out = prev._memo[memo_key]
        elif type_url == types.LISTENER:
            out = build_listeners(self.mesh, str(key))
        else:
            if self._route_bases is None:  # shared by every namespace's configurations
                self._route_bases = route_bases(self.mesh)
            out = route_config_bodies(self._route_bases, str(key))
        self._memo[memo_key] = out
        return out

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

    def _publish(self, started: float, change_seen: float | None) -> bool:
        try:
            mesh = self.store.mesh()
            translation = MeshTranslation(mesh, self._translation)
            snap = self.cache.publish(translation, PROBE)
            translation.finish()
            self._translation = translation
        except InconsistentSnapshot as exc:
            log.error("snapshot_rejected", reason=str(exc))
            return False
        except Exception:  # a translator bug must not take the server down
            log.exception("translation_failed")
            return False
        took = time.monotonic() - started
        self._report_problems(mesh)
        log.info("snapshot", generation=snap.generation, services=len(mesh.services),
                 took_ms=round(took * 1000, 2))
        for notify in self.on_publish:
            notify(snap, mesh, change_seen, started, took)
        return True

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
        loop = asyncio.get_running_loop()
        while True:
            await self.store.changed.wait()
            first = loop.time()
            while True:  # debounce: wait for `quiet` seconds of calm, at most `max_delay`
                self.store.changed.clear()
                remaining = self.max_delay - (loop.time() - first)
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(self.store.changed.wait(),
                                           min(self.quiet, remaining))
                except TimeoutError:
                    break
            self.publish()
