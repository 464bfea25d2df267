"""The translator as the snapshot cache sees it.

`MeshTranslation` adapts the pure translator (controlplane.translate) to the cache
(controlplane.xds.cache.TranslationSource): which types every proxy shares, which
depend on the proxy (and on what about it), each resource's name and dependencies, and
route configurations in wire form. Every unit it builds is checked (translate/guard.py);
one that fails is withheld and listed in `failures` for the push loop to act on.
Endpoints are shared too, except when a DestinationRule's locality load balancing makes
some service's assignments depend on where the proxy runs: then ENDPOINT is grouped by
the proxy's `Place`, each group the shared messages plus that place's assignments for
those services (`locality_services`, translate/locality.py).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2

from controlplane.model.mesh import Mesh
from controlplane.model.proxy import ProxyView
from controlplane.model.scoping import NO_CHOICES, RouteView, VsKey, vs_key
from controlplane.model.service import Service, ServicePort
from controlplane.model.virtual_service import HTTPMatch, VirtualService
from controlplane.translate import (
    Failure,
    Place,
    RouteBase,
    RouteHost,
    build_listeners,
    checked,
    depends_on_locality,
    global_clusters,
    listener_suspects,
    namespace_hosts,
    place_of,
    plain_routes,
    priority_labels,
    proxy_secrets,
    route_bases,
    route_config_shell,
    route_names,
    route_suspects,
    service_assignments,
    service_clusters,
    service_routes,
    service_suspects,
    with_domains,
    with_routes,
)
from controlplane.xds import types
from controlplane.xds.cache import Serialized
from controlplane.xds.wire import length_delimited

log = structlog.get_logger("controlplane.pipeline")

# Checks the listener/route pairing at publish time on behalf of every proxy.
PROBE = ProxyView(node_id="consistency-probe")


@dataclass(frozen=True)
class ListenerKey:
    """The listener group key when views differ in their listeners: the bind address
    and the view's namespace and Sidecar (labels matter to routes only)."""

    bind_ip: str
    view: RouteView


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
        # Virtual hosts some proxies' views route otherwise (another VirtualService, a
        # subset of its matches): (base host, VirtualService, matches taken) -> host.
        self._variants: dict[tuple[RouteHost, VsKey | None, tuple[bool, ...]], RouteHost] = {}
        self._views: dict[tuple[str, frozenset[tuple[str, str]]], RouteView] = {}
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
            self._variants = previous._variants
            self._views = previous._views  # the same Scopes: the same views
        # Services whose load assignments depend on the proxy's locality (see
        # translate/locality.py), and their assignments per locality, built on demand;
        # both carried over for clean services like the units.
        self._local_units: dict[tuple[str, Place], list[Any]] = {}
        self._by_locality = self._locality_services(previous)
        self.locality_services = frozenset(f for f, v in self._by_locality.items() if v)
        # The proxy labels some failoverPriority orders endpoints by: part of the key.
        self._priority_labels = frozenset(
            name for fqdn in self.locality_services
            for name in priority_labels(mesh, mesh.services[fqdn]))
        if previous is not None and mesh.dirty is not None:
            self._local_units = {k: u for k, u in previous._local_units.items()
                                 if k[0] not in mesh.dirty
                                 and k[0] in self.locality_services}

    def _locality_services(self, previous: MeshTranslation | None) -> dict[str, bool]:
        mesh = self.mesh
        dirty = mesh.dirty
        before = previous._by_locality if previous is not None and dirty is not None else {}
        out = {}
        for fqdn in mesh.destination_rules:  # only a rule turns locality balancing on
            service = mesh.services.get(fqdn)
            if service is None:
                continue
            known = before.get(fqdn)
            out[fqdn] = (known if known is not None and dirty is not None
                         and fqdn not in dirty else depends_on_locality(mesh, service))
        return out

    def group_key(self, type_url: str, proxy: ProxyView) -> Hashable:
        if type_url == types.LISTENER:
            if not self.mesh.scoping().scoped_listeners:
                return proxy.bind_ip
            view = self._view(proxy)  # TCP routes and chains differ by namespace, Sidecar
            return ListenerKey(proxy.bind_ip, RouteView(view.namespace, sidecar=view.sidecar))
        if type_url == types.SECRET:
            return proxy.namespace
        if type_url == types.ROUTE:
            # The proxy's namespace plus only what the mesh's rules tell apart
            # (model/scoping.py): proxies with equal views share the bytes.
            return self._view(proxy)
        if type_url == types.ENDPOINT and self.locality_services:
            # Only then do endpoints differ by where the proxy runs: each other
            # service's assignments stay the shared messages (and bytes).
            return place_of(proxy.locality, proxy.labels, self._priority_labels)
        return None

    def _view(self, proxy: ProxyView) -> RouteView:
        memo = (proxy.namespace, proxy.labels)
        view = self._views.get(memo)
        if view is None:
            view = self._views[memo] = self.mesh.scoping().view(*memo)
        return view

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

    def _local_unit(self, service: Service, place: Hashable) -> list[Any]:
        """A service's load assignments as a proxy at `place` gets them."""
        assert isinstance(place, Place)
        key = (service.fqdn, place)
        if key not in self._local_units:
            mesh = self.mesh
            assignments, failure = checked(
                f"endpoints of {service.fqdn} for locality {place.locality!r}",
                service_suspects(mesh, service),
                lambda: service_assignments(mesh, service, place))
            if failure is not None:
                # The shared assignments passed the same checks: serve those.
                log.error("unit_withheld", unit=failure.what, by=failure.by,
                          reason=failure.reason)
                assignments = self._unit(service)[1]
            self._local_units[key] = assignments
        return self._local_units[key]

    def _guard_routes(self, service: Service, port: ServicePort, number: int,
                      build: Callable[[], list[Any]], vs: VirtualService | None = None
                      ) -> list[Any]:
        routes, failure = checked(f"virtual host {service.fqdn}:{number}",
                                  route_suspects(self.mesh, service, vs), build)
        if failure is None:
            return routes
        if failure not in self.failures:  # a view's variant and the check of its rule
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
        if self.mesh.routes_changed:
            self._check_alternates()

    def messages(self, type_url: str, key: Hashable) -> list[Any]:
        memo_key = (type_url, key)
        if memo_key in self._memo:
            return self._memo[memo_key]
        out: list[Any]
        if type_url == types.ENDPOINT and key is not None:
            local = self.locality_services
            out = [m for s in self.mesh.services.values()
                   for m in (self._local_unit(s, key) if s.fqdn in local
                             else self._unit(s)[1])]
        elif type_url in (types.CLUSTER, types.ENDPOINT):
            units = [self._unit(s) for s in self.mesh.services.values()]
            part = 0 if type_url == types.CLUSTER else 1
            out = [m for unit in units for m in unit[part]]
            if type_url == types.CLUSTER:  # the outbound traffic policy's, never changing
                out.extend(global_clusters())
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
            if isinstance(key, ListenerKey):
                bind_ip, choices = key.bind_ip, self.mesh.scoping().choices(key.view)
            else:
                bind_ip, choices = str(key), NO_CHOICES
            listeners, failure = checked(f"listeners for {key}",
                                         listener_suspects(self.mesh),
                                         lambda: build_listeners(self.mesh, bind_ip, choices))
            if failure is None:
                return listeners
            # The push loop rejects the VirtualService behind it (tcp/tls routes) when one
            # changed; meanwhile, and when none did, the group's last good set.
            if failure not in self.failures:
                self.failures.append(failure)
            log.error("unit_withheld", unit=failure.what, by=failure.by,
                      reason=failure.reason)
            return self._last_memo.get((type_url, key), [])
        if self._route_bases is None:  # shared by every namespace's configurations
            self._route_bases = route_bases(self.mesh, self._guard_routes)
        assert isinstance(key, RouteView)
        return route_config_bodies(self._route_bases, key.namespace, self._route_entries,
                                   self._picker(key))

    def _picker(self, view: RouteView) -> Callable[[RouteBase, RouteHost], RouteHost | None
                                                   ] | None:
        """What `view` makes of each shared virtual host: itself, a variant, or None
        (hidden). None for a view that changes nothing."""
        scopes = self.mesh.scoping()
        choices = scopes.choices(view)
        if choices is NO_CHOICES and not scopes.selects_clients:
            return None
        shared = self.mesh.virtual_services

        def pick(base: RouteBase, host: RouteHost) -> RouteHost | None:
            service = host.service
            if service is None:
                return host
            fqdn = service.fqdn
            if fqdn in choices.hidden:
                return None
            if host.pod:
                return host
            if fqdn in choices.overrides:
                vs = choices.overrides[fqdn]
            else:
                vs = shared.get(fqdn)
                if vs is None or not vs.selects_clients:
                    return host
            mask = tuple(scopes.takes(m, view) for r in vs.http for m in r.matches
                         if m.selects_client) if vs is not None else ()
            memo = (host, vs_key(vs) if vs is not None else None, mask)
            variant = self._variants.get(memo)
            if variant is None:
                variant = self._variants[memo] = self._variant(base, host, vs, view)
            return variant
        return pick

    def _variant(self, base: RouteBase, host: RouteHost, vs: VirtualService | None,
                 view: RouteView) -> RouteHost:
        """`host` routed by `vs` (None: straight to the service), with the matches
        proxies of `view` take. Checked like the shared hosts; a failure falls back to
        the plain route."""
        assert host.service is not None and host.port is not None
        service, port, scopes = host.service, host.port, self.mesh.scoping()

        def keep(m: HTTPMatch) -> bool:
            return not m.selects_client or scopes.takes(m, view)

        routes = self._guard_routes(
            service, port, base.port,
            lambda: service_routes(self.mesh, service, port, base.port, vs, keep), vs)
        vhost = with_routes(host.vhost, routes)
        return RouteHost(host.namespace, host.short, vhost, service, port)

    def _check_alternates(self) -> None:
        """Build and check, once per set of bases, every VirtualService some view
        routes by besides the shared ones (exportTo, Sidecars), with all its matches: a
        view's variant is a subset of those routes, so failures surface here, where the
        push loop can reject the object behind them."""
        mesh = self.mesh
        for fqdn, vs in mesh.scoping().alternates():
            service = mesh.services[fqdn]
            for port in service.ports:
                if port.l7.is_http:
                    self._guard_routes(service, port, port.port,
                                       partial(service_routes, mesh, service, port,
                                               port.port, vs), vs)

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
                        entries: dict[RouteHost, bytes] | None = None,
                        pick: Callable[[RouteBase, RouteHost], RouteHost | None] | None = None
                        ) -> list[Serialized]:
    """`route_configs(bases, namespace)` in wire form, byte for byte what serializing
    those messages gives (a test holds the two equal for every golden case): each
    virtual host is serialized once per set of bases (`entries` keeps them) and joined,
    rather than copied into ten namespaces' messages and serialized ten times. `pick`:
    what a proxy's view makes of each host (a variant, or None to leave it out)."""
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
        for shared, extra in namespace_hosts(base, namespace):
            host = pick(base, shared) if pick is not None else shared
            if host is None:
                continue
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
