"""The translator as the snapshot cache sees it.

`MeshTranslation` adapts the pure translator (controlplane.translate) to the cache
(controlplane.xds.cache.TranslationSource): which types every proxy shares, which
depend on the proxy (and on what about it), each resource's name and dependencies, and
route configurations in wire form. Every unit it builds is checked (translate/guard.py);
one that fails is withheld and listed in `failures` for the push loop to act on.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import structlog
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2

from controlplane.model.mesh import Mesh
from controlplane.model.proxy import ProxyView
from controlplane.model.service import Service, ServicePort
from controlplane.translate import (
    Failure,
    RouteBase,
    RouteHost,
    build_listeners,
    checked,
    namespace_hosts,
    plain_routes,
    proxy_secrets,
    route_bases,
    route_config_shell,
    route_names,
    route_suspects,
    service_assignments,
    service_clusters,
    service_suspects,
    with_domains,
)
from controlplane.xds import types
from controlplane.xds.cache import Serialized
from controlplane.xds.wire import length_delimited

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
        self._route_bases: list[RouteBase] | None = None
        # Each virtual host's `virtual_hosts` entry, serialized once per set of bases.
        self._route_entries: dict[RouteHost, bytes] = {}
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
            self._route_entries = previous._route_entries

    def group_key(self, type_url: str, proxy: ProxyView) -> Hashable:
        if type_url == types.LISTENER:
            return proxy.bind_ip
        if type_url in (types.ROUTE, types.SECRET):
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
        elif type_url == types.SECRET:
            # Few, and cheap to assemble (their messages are memoized): built afresh.
            out = self._secrets(str(key))
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

    def _secrets(self, namespace: str) -> list[Any]:
        secrets, failure = checked(f"secrets for namespace {namespace}", (),
                                   lambda: proxy_secrets(self.mesh, namespace))
        if failure is None:
            return secrets
        # Secrets come from Kubernetes, not from an object a rejection could fix: the
        # namespace's last good set, reported.
        log.error("unit_withheld", unit=failure.what, by=failure.by, reason=failure.reason)
        return self._last_memo.get((types.SECRET, namespace), [])

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
        return route_config_bodies(self._route_bases, str(key), self._route_entries)

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


def route_config_bodies(bases: list[RouteBase], namespace: str,
                        entries: dict[RouteHost, bytes] | None = None) -> list[Serialized]:
    """`route_configs(bases, namespace)` in wire form, byte for byte what serializing
    those messages gives (a test holds the two equal for every golden case): each
    virtual host is serialized once per set of bases (`entries` keeps them) and joined,
    rather than copied into ten namespaces' messages and serialized ten times."""
    if entries is None:
        entries = {}
    out = []
    for base in bases:
        # Fields in number order, as a deterministic serialization writes them: the
        # name (1), the virtual hosts (2), then validate_clusters (7).
        config = route_config_shell(base)
        name = config.name
        head = route_pb2.RouteConfiguration(name=name).SerializeToString()
        config.ClearField("name")
        parts = [head]
        for host, extra in namespace_hosts(base, namespace):
            if extra:
                parts.append(_vhost_entry(with_domains(host.vhost, extra)))
            else:
                entry = entries.get(host)
                if entry is None:
                    entry = entries[host] = _vhost_entry(host.vhost)
                parts.append(entry)
        parts.append(config.SerializeToString(deterministic=True))
        out.append(Serialized(name, b"".join(parts)))
    return out


def _vhost_entry(vhost: Any) -> bytes:
    """A `virtual_hosts` (field 2) entry of a RouteConfiguration."""
    return length_delimited(2, vhost.SerializeToString(deterministic=True))
