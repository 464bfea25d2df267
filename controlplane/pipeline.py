"""The push loop: store changes -> debounce -> Mesh -> translation -> snapshot cache.

`MeshTranslation` adapts the pure translator to the cache: which types every proxy
shares, which depend on the proxy (and on what about it), and each resource's name and
dependencies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from typing import Any

import structlog
from envoy.config.cluster.v3 import cluster_pb2

from controlplane.model.mesh import Mesh
from controlplane.store import Store
from controlplane.translate import (
    ProxyView,
    build_clusters,
    build_listeners,
    build_load_assignments,
    build_route_configs,
    route_names,
)
from controlplane.xds import types
from controlplane.xds.cache import InconsistentSnapshot, Snapshot, SnapshotCache

log = structlog.get_logger("controlplane.pipeline")

# Checks the listener/route pairing at publish time on behalf of every proxy.
PROBE = ProxyView(node_id="consistency-probe")


class MeshTranslation:
    shared_types = frozenset({types.CLUSTER, types.ENDPOINT})

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self._memo: dict[tuple[str, Hashable], list[Any]] = {}

    def group_key(self, type_url: str, proxy: ProxyView) -> Hashable:
        if type_url == types.LISTENER:
            return proxy.bind_ip
        if type_url == types.ROUTE:
            return proxy.namespace
        return None

    def messages(self, type_url: str, key: Hashable) -> list[Any]:
        memo_key = (type_url, key)
        if memo_key not in self._memo:
            if type_url == types.CLUSTER:
                out: list[Any] = build_clusters(self.mesh)
            elif type_url == types.ENDPOINT:
                out = build_load_assignments(self.mesh)
            elif type_url == types.LISTENER:
                out = build_listeners(self.mesh, str(key))
            else:
                out = build_route_configs(self.mesh, str(key))
            self._memo[memo_key] = out
        return self._memo[memo_key]

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
        # Called after each publish with (snapshot, mesh, first change seen or None,
        # monotonic start of the publish, its duration in seconds).
        self.on_publish: list[Callable[[Snapshot, Mesh, float | None, float, float],
                                       None]] = []

    def publish(self) -> bool:
        started = time.monotonic()
        change_seen = self.store.first_unseen_change
        self.store.first_unseen_change = None
        try:
            mesh = self.store.mesh()
            snap = self.cache.publish(MeshTranslation(mesh), PROBE)
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
