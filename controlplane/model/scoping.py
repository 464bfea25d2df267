"""What each proxy may see of the mesh's routing, and how few distinct views that makes.

Istio decides per proxy: which VirtualService is in force for a host (exportTo, then
the proxy's Sidecar), which Services get a virtual host at all (the Service's exportTo,
the Sidecar's egress hosts), and which HTTP matches the proxy takes (sourceLabels,
sourceNamespace, gateways). Route configurations here are shared by every proxy with
the same answers, so a proxy's `RouteView` holds only the distinctions the mesh's rules
actually make: its namespace, the sourceLabels selectors (of rules it sees) its labels
satisfy, and the Sidecar that applies to it. Without any such rule every proxy of a
namespace has the same view, as before.

Which VirtualService wins a host for a namespace follows Istio's PushContext: those
private to the namespace, then those other namespaces export to it by name, then the
public ones, each oldest first; the first that names the host (and that the proxy's
Sidecar imports) wins. A host none wins gets the plain route to its service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controlplane.model.mesh_config import MeshConfig
from controlplane.model.service import Service
from controlplane.model.sidecar import Sidecar
from controlplane.model.virtual_service import MESH_GATEWAY, HTTPMatch, VirtualService
from controlplane.model.visibility import PUBLIC, is_exported, resolved_export

Labels = frozenset[tuple[str, str]]
VsKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class RouteView:
    """The route group key: proxies with equal views get the same route configurations."""

    namespace: str
    selectors: frozenset[Labels] = frozenset()  # sourceLabels selectors its labels satisfy
    sidecar: tuple[str, str] | None = None  # the Sidecar in force (namespace, name)


@dataclass(frozen=True)
class HostChoices:
    """A view's departures from the shared routes: hosts whose VirtualService differs
    (None: the plain route) and hosts it must not get at all."""

    overrides: Mapping[str, VirtualService | None]
    hidden: frozenset[str]


NO_CHOICES = HostChoices({}, frozenset())


def vs_key(vs: VirtualService) -> VsKey:
    return (vs.meta.namespace, vs.meta.name)


class Scopes:
    """Visibility of one Mesh's VirtualServices, Services and Sidecars; immutable once
    built (its per-namespace answers are computed on first use and kept)."""

    def __init__(self, services: Mapping[str, Service],
                 candidates: Mapping[str, list[VirtualService]],
                 sidecars: Iterable[Sidecar], config: MeshConfig,
                 resolve: Mapping[VsKey, tuple[str, ...]]) -> None:
        self.services = services
        self.candidates = candidates  # host FQDN -> VirtualServices naming it, oldest first
        self.config = config
        self.resolved_hosts = resolve  # VirtualService -> its hosts as FQDNs
        self.sidecars = sorted(sidecars, key=lambda s: (
            s.meta.creation_timestamp or "~", s.meta.namespace, s.meta.name))
        self.vs_export: dict[VsKey, frozenset[str]] = {}
        for vses in candidates.values():
            for vs in vses:
                self.vs_export[vs_key(vs)] = resolved_export(
                    vs.export_to or config.default_virtual_service_export_to,
                    vs.meta.namespace)
        self.service_export = {
            fqdn: resolved_export(s.export_to or config.default_service_export_to,
                                  s.meta.namespace)
            for fqdn, s in services.items()}
        self.scoped_services = any(PUBLIC not in e for e in self.service_export.values())
        self.scoped_vs = any(PUBLIC not in e for e in self.vs_export.values())
        # The VirtualService every namespace sees for a host unless told otherwise: the
        # oldest public one. The shared routes are built from it.
        self.default: dict[str, VirtualService] = {}
        for fqdn, vses in candidates.items():
            public = next((v for v in vses if PUBLIC in self.vs_export[vs_key(v)]), None)
            if public is not None:
                self.default[fqdn] = public
        # Whether any match depends on the asking proxy (sourceLabels, sourceNamespace,
        # gateways): else a view without choices changes nothing.
        self.selects_clients = any(vs.selects_clients for vses in candidates.values()
                                   for vs in vses)
        # Whether listeners differ by view: a Sidecar, a TCP service not exported
        # everywhere, or a host whose TCP or TLS routes some view takes from another
        # VirtualService (or loses, where its own has none).
        self.scoped_listeners = bool(self.sidecars) or any(
            PUBLIC not in self.service_export[fqdn] and any(not p.l7.is_http
                                                            for p in s.ports)
            for fqdn, s in services.items()) or any(
                vs.tcp or vs.tls or ((d := self.default.get(fqdn)) is not None
                                     and bool(d.tcp or d.tls))
                for fqdn, vs in self.alternates())
        self._selectors: dict[str, tuple[Labels, ...]] = {}
        self._choices: dict[tuple[str, tuple[str, str] | None], HostChoices] = {}

    # -- the view of one proxy --------------------------------------------------------

    def view(self, namespace: str, labels: Labels) -> RouteView:
        sidecar = self.sidecar_for(namespace, labels)
        selectors = frozenset(s for s in self.selectors(namespace) if s <= labels)
        return RouteView(namespace, selectors,
                         (sidecar.meta.namespace, sidecar.meta.name) if sidecar else None)

    def sidecar_for(self, namespace: str, labels: Labels) -> Sidecar | None:
        """Istio's order: the namespace's Sidecars with a selector the workload matches,
        then its Sidecar without one, then the root namespace's without one (oldest
        first in each)."""
        if not self.sidecars:
            return None
        mine = [s for s in self.sidecars if s.meta.namespace == namespace]
        for s in mine:
            if s.workload_selector is not None and s.workload_selector <= labels:
                return s
        for s in mine:
            if s.workload_selector is None:
                return s
        for s in self.sidecars:
            if s.meta.namespace == self.config.root_namespace and s.workload_selector is None:
                return s
        return None

    def selectors(self, namespace: str) -> tuple[Labels, ...]:
        """The sourceLabels selectors that can change a route for proxies of this
        namespace: those of matches (not gateway-bound, for this namespace or any) in
        VirtualServices the namespace sees."""
        if namespace not in self._selectors:
            found: dict[Labels, None] = {}
            for vs in self._visible_vses(namespace):
                for route in vs.http:
                    for m in route.matches:
                        if (m.source_labels and not m.gateways
                                and m.source_namespace in ("", namespace)):
                            found[m.source_labels] = None
            self._selectors[namespace] = tuple(found)
        return self._selectors[namespace]

    def _visible_vses(self, namespace: str) -> Iterable[VirtualService]:
        seen: set[VsKey] = set()
        for vses in self.candidates.values():
            for vs in vses:
                key = vs_key(vs)
                if (key not in seen and vs.selects_clients
                        and is_exported(self.vs_export[key], namespace)):
                    seen.add(key)
                    yield vs

    # -- what a view changes in the shared routes ---------------------------------------

    def takes(self, match: HTTPMatch, view: RouteView) -> bool:
        """Whether proxies of this view take the match (Istio's sourceMatchHTTP)."""
        if match.gateways:
            return MESH_GATEWAY in match.gateways
        return ((not match.source_labels or match.source_labels in view.selectors)
                and match.source_namespace in ("", view.namespace))

    def choices(self, view: RouteView) -> HostChoices:
        key = (view.namespace, view.sidecar)
        if key not in self._choices:
            self._choices[key] = self._compute(view)
        return self._choices[key]

    def _sidecar(self, ref: tuple[str, str] | None) -> Sidecar | None:
        if ref is None:
            return None
        return next(s for s in self.sidecars if (s.meta.namespace, s.meta.name) == ref)

    def _compute(self, view: RouteView) -> HostChoices:
        ns = view.namespace
        sidecar = self._sidecar(view.sidecar)
        if sidecar is None and not self.scoped_services and not self.scoped_vs:
            return NO_CHOICES
        hidden = frozenset(
            fqdn for fqdn, s in self.services.items()
            if not is_exported(self.service_export[fqdn], ns) or (
                sidecar is not None
                and not sidecar.imports_service(s.meta.namespace, fqdn, ns)))
        overrides: dict[str, VirtualService | None] = {}
        for fqdn, vses in self.candidates.items():
            if fqdn in hidden:
                continue
            winner = self.winner(vses, ns, sidecar)
            if winner is not self.default.get(fqdn):
                overrides[fqdn] = winner
        return HostChoices(overrides, hidden)

    def winner(self, vses: list[VirtualService], ns: str, sidecar: Sidecar | None = None
               ) -> VirtualService | None:
        """Which of a host's VirtualServices (oldest first) proxies of namespace `ns`
        (with this Sidecar) route by; None: none of them."""
        tiers: tuple[list[VirtualService], list[VirtualService], list[VirtualService]] = (
            [], [], [])
        for vs in vses:
            export = self.vs_export[vs_key(vs)]
            if PUBLIC in export:
                tiers[2].append(vs)
            elif ns in export and "~" not in export:
                tiers[0 if vs.meta.namespace == ns else 1].append(vs)
        for tier in tiers:
            for vs in tier:
                if sidecar is None or sidecar.imports_virtual_service(
                        vs.meta.namespace, self.resolved_hosts[vs_key(vs)], ns):
                    return vs
        return None

    def alternates(self) -> Iterable[tuple[str, VirtualService]]:
        """(host, VirtualService) pairs some view may route by other than the shared
        default: every candidate that is not the host's default."""
        for fqdn, vses in self.candidates.items():
            default = self.default.get(fqdn)
            for i, vs in enumerate(vses):
                export = self.vs_export[vs_key(vs)]
                # One visible to the same namespaces and older shadows it everywhere.
                if vs is not default and not any(self.vs_export[vs_key(o)] == export
                                                  for o in vses[:i]):
                    yield fqdn, vs
