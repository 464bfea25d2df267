"""The consistent, immutable view of the mesh that the translator reads.

Services by FQDN, each service port's endpoints (from EndpointSlices, else Endpoints,
else the Pods its selector matches, as Kubernetes' own controller would publish them),
and the VirtualService and DestinationRule in force for each host. Problems found on the
way (a route to a host that does not exist, two VirtualServices for one host) are
collected, never raised.

Built incrementally: `MeshIndex` keeps the mirrored objects indexed as they change, and
`build_mesh` recomputes only the services a change can affect, reusing everything else
from the previous Mesh, down to the very tuples of endpoints. `Mesh.dirty` names the
services whose clusters or endpoints may differ from the previous Mesh, and
`Mesh.routes_changed` says whether listeners and routes may, so the translator can reuse
the rest.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from controlplane.model.delegate import merge_delegates
from controlplane.model.destination_rule import DestinationRule
from controlplane.model.locality import join, locality_of_labels
from controlplane.model.mesh_config import MeshConfig
from controlplane.model.mesh_index import MeshIndex, ServiceId
from controlplane.model.meta import Key
from controlplane.model.scoping import Scopes, vs_key
from controlplane.model.secret import Secret
from controlplane.model.service import DOMAIN_SUFFIX, Protocol, Service
from controlplane.model.virtual_service import VirtualService
from controlplane.model.workload import EndpointAddress, EndpointSlice, Pod

_Routing = TypeVar("_Routing", VirtualService, DestinationRule)


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    labels: frozenset[tuple[str, str]] = frozenset()
    pod: str = ""
    hostname: str = ""
    locality: str = ""  # "region/zone/subzone" (model/locality.py); "" when unknown


@dataclass(frozen=True, eq=False)
class Mesh:
    services: Mapping[str, Service]  # by FQDN, in (namespace, name) order
    endpoints: Mapping[tuple[str, int], tuple[Endpoint, ...]]  # (FQDN, service port)
    virtual_services: Mapping[str, VirtualService]  # host FQDN -> the VirtualService in force
    destination_rules: Mapping[str, DestinationRule]  # host FQDN -> the rule in force
    problems: tuple[str, ...] = field(default=())
    # Against the previous Mesh: services whose clusters/endpoints may differ (None: any).
    dirty: frozenset[str] | None = None
    routes_changed: bool = True  # whether listeners and routes may differ
    # Headless services' per-pod hostnames (FQDN -> sorted; only non-empty): each gets a
    # cluster and a virtual host, with or without ready endpoints (_pod_hostnames).
    pod_hostnames: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Mesh-wide settings (Istio's MeshConfig); defaults when none is configured.
    config: MeshConfig = field(default_factory=MeshConfig)
    # Secrets by (namespace, name), for credentialName; and whether they may differ
    # from the previous Mesh's (the translator then rebuilds the SDS resources).
    secrets: Mapping[ServiceId, Secret] = field(default_factory=dict)
    secrets_changed: bool = True
    # Who sees which VirtualService and Service (exportTo, Sidecars): per-proxy views
    # of the routes. `virtual_services` holds the VirtualService every namespace gets
    # unless its view says otherwise (model/scoping.py).
    scopes: Scopes | None = None

    def scoping(self) -> Scopes:
        if self.scopes is None:  # a Mesh made by hand: everything public
            object.__setattr__(self, "scopes", Scopes(
                self.services, {h: [vs] for h, vs in self.virtual_services.items()}, (),
                self.config, {vs_key(vs): tuple(self.resolve_host(h, vs.meta.namespace)
                                                for h in vs.hosts)
                              for vs in self.virtual_services.values()}))
        assert self.scopes is not None
        return self.scopes

    def resolve_host(self, host: str, namespace: str) -> str:
        """The FQDN a VirtualService/DestinationRule host means, Istio's way: a name
        without dots is relative to the object's namespace. `name.ns` and `name.ns.svc`
        are completed too when they name a known service (Kubernetes DNS would)."""
        if "." not in host:
            return f"{host}.{namespace}.{DOMAIN_SUFFIX}"
        if host in self.services:
            return host
        for suffix in (f".{DOMAIN_SUFFIX}", ".cluster.local"):
            if f"{host}{suffix}" in self.services:
                return f"{host}{suffix}"
        return host


def _oldest_first(objs: Iterable[_Routing]) -> list[_Routing]:
    # Istio: the oldest object wins; ties broken by namespace/name.
    return sorted(objs, key=lambda o: (o.meta.creation_timestamp or "~", o.meta.namespace,
                                       o.meta.name))


def _pod_addresses(service: Service, pods: Iterable[Pod]) -> list[EndpointAddress]:
    """What Kubernetes' endpoint controller would publish for a selector-based service."""
    out = []
    selector = service.selector or frozenset()
    for pod in pods:
        if not pod.ip or not selector <= pod.meta.labels:
            continue
        ports = []
        for sp in service.ports:
            target = sp.target_port
            number = target if isinstance(target, int) else pod.container_port(target)
            if number is not None:
                ports.append((sp.name, number))
        out.append(EndpointAddress(ip=pod.ip, ready=pod.ready, ports=tuple(ports),
                                   hostname=_pod_hostname(service, pod), pod=pod.meta.name))
    return out


def _pod_hostname(service: Service, pod: Pod) -> str:
    """The name a pod is published under in a headless service ("" for none)."""
    if pod.subdomain != service.meta.name:
        return ""
    return pod.hostname or pod.meta.name


def _pod_hostnames(index: MeshIndex, service: Service, labels: LabelIndex
                   ) -> tuple[str, ...]:
    """A headless service's per-pod hostnames: those its endpoint objects publish, ready
    or not, and those of the pods it selects that name it as their subdomain, in any
    phase (pending with no IP yet, terminating). A StatefulSet pod being replaced goes
    terminating -> deleted -> recreated pending -> ready, and at each step either the
    old pod, the slice's not-ready endpoint or the new pod carries its name: its host and
    cluster stay (answering 503 while no pod is ready) and only its endpoints change.
    A function of the objects alone (no timers), so an incremental Mesh equals one
    built from scratch."""
    ident = (service.meta.namespace, service.meta.name)
    if index.slices.get(ident):
        addrs: Iterable[EndpointAddress] = (
            a for s in index.slices[ident].values() for a in s.addresses)
    elif ident in index.endpoints:
        addrs = index.endpoints[ident].addresses
    else:
        addrs = ()
    names = {a.hostname for a in addrs if a.hostname}
    if service.selector:
        names.update(_pod_hostname(service, p) for p in labels.matching(service.selector))
        names.discard("")
    return tuple(sorted(names))


class LabelIndex:
    """Pods of one namespace by label pair, built on first use: a selector then scans
    the pods carrying one of its labels, not the whole namespace."""

    def __init__(self, pods: Mapping[str, Pod]) -> None:
        self.pods = pods
        self.by_pair: dict[tuple[str, str], list[Pod]] | None = None

    def matching(self, selector: frozenset[tuple[str, str]]) -> list[Pod]:
        if self.by_pair is None:
            self.by_pair = defaultdict(list)
            for pod in self.pods.values():
                for pair in pod.meta.labels:
                    self.by_pair[pair].append(pod)
        smallest = min((self.by_pair.get(pair, []) for pair in selector), key=len)
        return [p for p in smallest if selector <= p.meta.labels]


def _service_endpoints(index: MeshIndex, service: Service, labels: LabelIndex
                       ) -> dict[int, tuple[Endpoint, ...]]:
    ns = service.meta.namespace
    ident = (ns, service.meta.name)
    if index.slices.get(ident):
        addrs = [a for _, s in sorted(index.slices[ident].items()) for a in s.addresses]
    elif ident in index.endpoints:
        addrs = list(index.endpoints[ident].addresses)
    elif service.selector:
        addrs = _pod_addresses(service, sorted(labels.matching(service.selector),
                                               key=lambda p: p.meta.name))
    else:
        addrs = []
    pods = index.pods_by_ns.get(ns, {})
    # Per ready address once: its port map and pod labels (not once per service port).
    usable = []
    single = len(service.ports) == 1
    for a in addrs:
        if not (a.ready or service.publish_not_ready):
            continue
        pod = pods.get(a.pod) if a.pod else None
        ports = dict(a.ports)
        if single and len(a.ports) == 1:
            ports.setdefault(service.ports[0].name, a.ports[0][1])
        pod_labels = pod.meta.labels if pod else frozenset()
        # The pod's locality label, else the slice's zone (the region is on the Node).
        locality = locality_of_labels(pod_labels) or (join("", a.zone) if a.zone else "")
        usable.append((a, ports, pod_labels, locality))
    out = {}
    for sp in service.ports:
        by_target: dict[tuple[str, int], Endpoint] = {}
        for a, ports, pod_labels, locality in usable:
            number = ports.get(sp.name)
            if number is not None and (a.ip, number) not in by_target:
                by_target[(a.ip, number)] = Endpoint(ip=a.ip, port=number, labels=pod_labels,
                                                     pod=a.pod, hostname=a.hostname,
                                                     locality=locality)
        out[sp.port] = tuple(by_target[k] for k in sorted(by_target))
    return out


def _affected(index: MeshIndex, changes: Mapping[Key, object | None]
              ) -> tuple[set[ServiceId], bool]:
    """Services whose endpoints a change can touch, and whether routing objects or the
    set of services changed."""
    affected: set[ServiceId] = set()
    routing = False
    for key, old in changes.items():
        ns = key.namespace
        if key.kind == "Service":
            affected.add((ns, key.name))
            routing = True
        elif key.kind in ("VirtualService", "DestinationRule", "Sidecar", "ConfigMap"):
            # The mesh config (outbound traffic policy, exportTo defaults) shapes listeners
            # and routes; clusters and endpoints do not depend on it.
            routing = True
        elif key.kind == "Endpoints":
            affected.add((ns, key.name))
        elif key.kind == "EndpointSlice":  # the slice's service, before and after
            for obj in (old, index.slice_by_name.get((ns, key.name))):
                if isinstance(obj, EndpointSlice):
                    affected.add((ns, obj.service))
        elif key.kind == "Pod":
            new_pod = index.pods_by_ns.get(ns, {}).get(key.name)
            label_sets = [p.meta.labels for p in (old, new_pod) if isinstance(p, Pod)]
            for service in index.services_by_ns.get(ns, {}).values():
                if service.selector and any(service.selector <= ls for ls in label_sets):
                    affected.add((ns, service.meta.name))
            affected |= index.pod_services.get((ns, key.name), set())
    return affected, routing


def build_mesh(objects: Mapping[Key, object] | MeshIndex, previous: Mesh | None = None,
               changes: Mapping[Key, object | None] | None = None,
               config: MeshConfig | None = None) -> Mesh:
    """The Mesh of `objects` (or of an index kept up to date). With the previous Mesh
    and the changes since it (key -> the object before), only what they can affect is
    recomputed. `config`: the mesh-wide settings, when not the index's (the `istio`
    ConfigMap's, else defaults): for tests that build a Mesh directly."""
    index = objects if isinstance(objects, MeshIndex) else MeshIndex.of(objects)
    if config is None:
        config = index.mesh_config
    if previous is not None and changes is not None and not any(
            k.kind == "Service" for k in changes):
        services = previous.services  # the same services, in the same order
    else:
        services = {s.fqdn: s for s in sorted(index.services.values(),
                                              key=lambda s: (s.meta.namespace, s.meta.name))}
    labels: dict[str, LabelIndex] = {}

    def label_index(ns: str) -> LabelIndex:
        if ns not in labels:
            labels[ns] = LabelIndex(index.pods_by_ns.get(ns, {}))
        return labels[ns]

    incremental = previous is not None and changes is not None
    secrets_changed = not incremental or any(k.kind == "Secret" for k in changes or ())
    secrets = dict(index.secrets) if secrets_changed or previous is None else previous.secrets
    if incremental:
        assert previous is not None and changes is not None
        affected, routing = _affected(index, changes)
        endpoints = dict(previous.endpoints)
        pod_hostnames = dict(previous.pod_hostnames)
        dirty: set[str] = set()
        for ns, name in affected:
            fqdn = f"{name}.{ns}.{DOMAIN_SUFFIX}"
            dirty.add(fqdn)
            pod_hostnames.pop(fqdn, None)
            old_service = previous.services.get(fqdn)
            for sp in old_service.ports if old_service else ():
                endpoints.pop((fqdn, sp.port), None)
            service = services.get(fqdn)
            if service is None:
                continue
            for port, eps in _service_endpoints(index, service, label_index(ns)).items():
                key = (fqdn, port)
                # Keep the old tuple when equal: downstream memos compare by identity.
                old = previous.endpoints.get(key)
                endpoints[key] = old if old == eps else eps
            if service.headless:
                hostnames = _pod_hostnames(index, service, label_index(ns))
                if hostnames:
                    pod_hostnames[fqdn] = hostnames
                # Per-pod hosts appear or go: routes change. A pod merely being replaced
                # keeps its host, so that is an endpoint change alone.
                if hostnames != previous.pod_hostnames.get(fqdn, ()):
                    routing = True
    else:
        endpoints = {}
        pod_hostnames = {}
        for fqdn, service in services.items():
            for port, eps in _service_endpoints(index, service,
                                                label_index(service.meta.namespace)).items():
                endpoints[(fqdn, port)] = eps
            if service.headless and (hostnames := _pod_hostnames(
                    index, service, label_index(service.meta.namespace))):
                pod_hostnames[fqdn] = hostnames
        routing = True

    if incremental and not routing:
        assert previous is not None
        return Mesh(services=services, endpoints=endpoints,
                    virtual_services=previous.virtual_services,
                    destination_rules=previous.destination_rules,
                    problems=previous.problems, dirty=frozenset(dirty), routes_changed=False,
                    pod_hostnames=pod_hostnames, config=config,
                    scopes=previous.scopes, secrets=secrets,
                    secrets_changed=secrets_changed)

    mesh = Mesh(services=services, endpoints=endpoints, virtual_services={},
                destination_rules={}, config=config)
    vs_by_host, dr_by_host, problems, scopes = _routing(mesh, index)
    if incremental:
        assert previous is not None
        # A rule appearing, going or changing touches the clusters of its hosts.
        for fqdn in set(dr_by_host) | set(previous.destination_rules):
            if dr_by_host.get(fqdn) is not previous.destination_rules.get(fqdn):
                dirty.add(fqdn)
    return Mesh(services=services, endpoints=endpoints, virtual_services=vs_by_host,
                destination_rules=dr_by_host, problems=tuple(problems),
                dirty=frozenset(dirty) if incremental else None, routes_changed=True,
                pod_hostnames=pod_hostnames, config=config, scopes=scopes,
                secrets=secrets, secrets_changed=secrets_changed)


def tcp_routes_on_tls_ports(vs: VirtualService, service: Service) -> list[tuple[int, int]]:
    """(tcp route index, port) for each `tcp` route that would match a TLS port of the
    service: as in Istio, a TLS port is routed by `tls` routes only, so such a route does
    nothing there (before TLS ports were told apart, it did)."""
    return [(i, port.port) for port in service.ports if port.l7 is Protocol.TLS
            for i, route in enumerate(vs.tcp) if not route.ports or port.port in route.ports]


def _routing(mesh: Mesh, index: MeshIndex
             ) -> tuple[dict[str, VirtualService], dict[str, DestinationRule], list[str],
                        Scopes]:
    services = mesh.services
    problems: list[str] = []
    # Every VirtualService naming each host, oldest first: which one a proxy gets
    # depends on its namespace (exportTo) and Sidecar (model/scoping.py).
    # Delegating routes replaced by their delegates' (model/delegate.py), once per root,
    # before anything looks at a root's routes.
    delegates = {(v.meta.namespace, v.meta.name): v for v in index.virtual_services.values()
                 if v.is_delegate}
    roots = [merge_delegates(v, delegates, mesh.resolve_host, problems,
                             mesh.config.default_virtual_service_export_to)
             for v in _oldest_first(v for v in index.virtual_services.values()
                                    if v.applies_to_sidecars and not v.is_delegate)]
    candidates: dict[str, list[VirtualService]] = defaultdict(list)
    resolved: dict[tuple[str, str], tuple[str, ...]] = {}
    for vs in roots:
        resolved[vs_key(vs)] = tuple(mesh.resolve_host(h, vs.meta.namespace)
                                     for h in vs.hosts)
        for fqdn in resolved[vs_key(vs)]:
            if fqdn in services and vs not in candidates[fqdn]:
                candidates[fqdn].append(vs)
    scopes = Scopes(services, dict(candidates), index.sidecars.values(), mesh.config,
                    resolved)
    vs_by_host: dict[str, VirtualService] = {}
    exports = scopes.vs_export
    for vs in roots:
        for host in vs.hosts:
            fqdn = mesh.resolve_host(host, vs.meta.namespace)
            if fqdn in services and scopes.default.get(fqdn) is not vs:
                # Not the host's shared VirtualService: some namespaces may still get it
                # (exportTo); an older one visible to the same namespaces shadows it.
                shadow = next((w for w in candidates[fqdn]
                               if exports[vs_key(w)] == exports[vs_key(vs)]), vs)
                if shadow is not vs:
                    problems.append(
                        f"VirtualService {vs.meta.namespace}/{vs.meta.name}: host {fqdn} is "
                        f"already routed by the older VirtualService {shadow.meta.namespace}/"
                        f"{shadow.meta.name}; this one is ignored for that host")
                continue
            if fqdn in vs_by_host:
                winner = vs_by_host[fqdn]
                problems.append(
                    f"VirtualService {vs.meta.namespace}/{vs.meta.name}: host {fqdn} is "
                    f"already routed by the older VirtualService {winner.meta.namespace}/"
                    f"{winner.meta.name}; this one is ignored for that host")
                continue
            if fqdn not in services:
                problems.append(f"VirtualService {vs.meta.namespace}/{vs.meta.name}: host "
                                f"{host!r} matches no service")
                continue
            vs_by_host[fqdn] = vs
            problems.extend(
                f"VirtualService {vs.meta.namespace}/{vs.meta.name}: spec.tcp[{i}] does not "
                f"apply to port {port} of {fqdn}: a TLS port is routed by `tls` routes (by SNI)"
                for i, port in tcp_routes_on_tls_ports(vs, services[fqdn]))
    dr_by_host: dict[str, DestinationRule] = {}
    for dr in _oldest_first(index.destination_rules.values()):
        fqdn = mesh.resolve_host(dr.host, dr.meta.namespace)
        if fqdn in dr_by_host:
            older = dr_by_host[fqdn]
            problems.append(
                f"DestinationRule {dr.meta.namespace}/{dr.meta.name}: host {fqdn} already has "
                f"the older DestinationRule {older.meta.namespace}/{older.meta.name}; this "
                "one is ignored")
            continue
        if fqdn not in services:
            problems.append(f"DestinationRule {dr.meta.namespace}/{dr.meta.name}: host "
                            f"{dr.host!r} matches no service")
        dr_by_host[fqdn] = dr
    in_force = [*vs_by_host.values(), *(vs for _, vs in scopes.alternates())]
    for vs in dict.fromkeys(in_force):
        routes = [("http", i, r.route, "requests to it answer 503")
                  for i, r in enumerate(vs.http)]
        routes += [("tls", i, r.route, "connections to it are closed")
                   for i, r in enumerate(vs.tls)]
        for section, i, dests, outcome in routes:
            for j, wd in enumerate(dests):
                dest = wd.destination
                fqdn = mesh.resolve_host(dest.host, vs.meta.namespace)
                where = (f"VirtualService {vs.meta.namespace}/{vs.meta.name}: "
                         f"spec.{section}[{i}].route[{j}].destination")
                if section == "http" and vs.http[i].origin is not None:
                    where = (f"VirtualService {vs.meta.namespace}/{vs.meta.name}, route "
                             f"{i} (from {vs.http[i].origin}): route[{j}].destination")
                if fqdn not in services:
                    problems.append(f"{where}.host: {dest.host!r} matches no service; "
                                    f"{outcome} until it exists")
                elif dest.subset and (fqdn not in dr_by_host
                                      or not dr_by_host[fqdn].subset(dest.subset)):
                    problems.append(f"{where}.subset: subset {dest.subset!r} of {fqdn} is not "
                                    f"defined by a DestinationRule; {outcome} until it is")
    return vs_by_host, dr_by_host, problems, scopes
