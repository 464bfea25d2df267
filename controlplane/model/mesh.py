"""The consistent, immutable view of the mesh that the translator reads.

Built from the mirrored objects in one pass: services by FQDN, each service port's
endpoints (from EndpointSlices, else Endpoints, else the Pods its selector matches, as
Kubernetes' own controller would publish them), and the VirtualService and
DestinationRule that apply to each host. Problems found on the way (a route to a host
that does not exist, two VirtualServices for one host) are collected, never raised.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from controlplane.model.destination_rule import DestinationRule
from controlplane.model.meta import Key
from controlplane.model.service import DOMAIN_SUFFIX, Service
from controlplane.model.virtual_service import VirtualService
from controlplane.model.workload import EndpointAddress, Endpoints, EndpointSlice, Pod


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    labels: frozenset[tuple[str, str]] = frozenset()
    pod: str = ""
    hostname: str = ""


@dataclass(frozen=True)
class Mesh:
    services: Mapping[str, Service]  # by FQDN, sorted
    endpoints: Mapping[tuple[str, int], tuple[Endpoint, ...]]  # (FQDN, service port)
    virtual_services: Mapping[str, VirtualService]  # host FQDN -> the VirtualService in force
    destination_rules: Mapping[str, DestinationRule]  # host FQDN -> the rule in force
    problems: tuple[str, ...] = field(default=())

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


def _oldest_first(objs: Iterable[VirtualService | DestinationRule]) -> list:
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
        hostname = ""
        if pod.subdomain == service.meta.name:
            hostname = pod.hostname or pod.meta.name
        out.append(EndpointAddress(ip=pod.ip, ready=pod.ready, ports=tuple(ports),
                                   hostname=hostname, pod=pod.meta.name))
    return out


def build_mesh(objects: Mapping[Key, object]) -> Mesh:
    services: dict[str, Service] = {}
    pods: dict[tuple[str, str], Pod] = {}
    pods_by_ns: dict[str, list[Pod]] = defaultdict(list)
    slices: dict[tuple[str, str], list[EndpointSlice]] = defaultdict(list)
    endpoints_objs: dict[tuple[str, str], Endpoints] = {}
    vss: list[VirtualService] = []
    drs: list[DestinationRule] = []
    for key in sorted(objects, key=lambda k: (k.kind, k.namespace, k.name)):
        obj = objects[key]
        if isinstance(obj, Service):
            services[obj.fqdn] = obj
        elif isinstance(obj, Pod):
            pods[(obj.meta.namespace, obj.meta.name)] = obj
            pods_by_ns[obj.meta.namespace].append(obj)
        elif isinstance(obj, EndpointSlice):
            slices[(obj.meta.namespace, obj.service)].append(obj)
        elif isinstance(obj, Endpoints):
            endpoints_objs[(obj.meta.namespace, obj.meta.name)] = obj
        elif isinstance(obj, VirtualService):
            vss.append(obj)
        elif isinstance(obj, DestinationRule):
            drs.append(obj)

    endpoints: dict[tuple[str, int], tuple[Endpoint, ...]] = {}
    for fqdn, svc in services.items():
        ns_name = (svc.meta.namespace, svc.meta.name)
        if ns_name in slices:
            addrs = [a for s in slices[ns_name] for a in s.addresses]
        elif ns_name in endpoints_objs:
            addrs = list(endpoints_objs[ns_name].addresses)
        elif svc.selector:
            addrs = _pod_addresses(svc, pods_by_ns.get(svc.meta.namespace, ()))
        else:
            addrs = []
        for sp in svc.ports:
            seen: set[tuple[str, int]] = set()
            eps = []
            for a in addrs:
                if not (a.ready or svc.publish_not_ready):
                    continue
                number = next((n for name, n in a.ports if name == sp.name), None)
                if number is None and len(svc.ports) == 1 and len(a.ports) == 1:
                    number = a.ports[0][1]
                if number is None or (a.ip, number) in seen:
                    continue
                seen.add((a.ip, number))
                pod = pods.get((svc.meta.namespace, a.pod)) if a.pod else None
                eps.append(Endpoint(ip=a.ip, port=number,
                                    labels=pod.meta.labels if pod else frozenset(),
                                    pod=a.pod, hostname=a.hostname))
            endpoints[(fqdn, sp.port)] = tuple(sorted(eps, key=lambda e: (e.ip, e.port)))

    mesh = Mesh(services=services, endpoints=endpoints, virtual_services={},
                destination_rules={})
    problems: list[str] = []
    vs_by_host: dict[str, VirtualService] = {}
    for vs in _oldest_first(v for v in vss if v.applies_to_sidecars):
        for host in vs.hosts:
            fqdn = mesh.resolve_host(host, vs.meta.namespace)
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
    dr_by_host: dict[str, DestinationRule] = {}
    for dr in _oldest_first(drs):
        fqdn = mesh.resolve_host(dr.host, dr.meta.namespace)
        if fqdn in dr_by_host:
            winner = dr_by_host[fqdn]
            problems.append(
                f"DestinationRule {dr.meta.namespace}/{dr.meta.name}: host {fqdn} already has "
                f"the older DestinationRule {winner.meta.namespace}/{winner.meta.name}; this "
                "one is ignored")
            continue
        if fqdn not in services:
            problems.append(f"DestinationRule {dr.meta.namespace}/{dr.meta.name}: host "
                            f"{dr.host!r} matches no service")
        dr_by_host[fqdn] = dr
    for vs in dict.fromkeys(vs_by_host.values()):
        for i, route in enumerate(vs.http):
            for j, wd in enumerate(route.route):
                dest = wd.destination
                fqdn = mesh.resolve_host(dest.host, vs.meta.namespace)
                where = (f"VirtualService {vs.meta.namespace}/{vs.meta.name}: "
                         f"spec.http[{i}].route[{j}].destination")
                if fqdn not in services:
                    problems.append(f"{where}.host: {dest.host!r} matches no service; "
                                    "requests to it answer 503 until it exists")
                elif dest.subset and (fqdn not in dr_by_host
                                      or not dr_by_host[fqdn].subset(dest.subset)):
                    problems.append(f"{where}.subset: subset {dest.subset!r} of {fqdn} is not "
                                    "defined by a DestinationRule; requests to it answer 503 "
                                    "until it is")
    return Mesh(services=services, endpoints=endpoints, virtual_services=vs_by_host,
                destination_rules=dr_by_host, problems=tuple(problems))
