"""EDS: one ClusterLoadAssignment per cluster, named like the cluster."""

from __future__ import annotations

import functools

from envoy.config.core.v3 import address_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from controlplane.model.destination_rule import TrafficPolicy
from controlplane.model.mesh import Endpoint, Mesh
from controlplane.model.service import Service
from controlplane.translate.clusters import is_passthrough, proxied_ports
from controlplane.translate.headless import pod_hosts
from controlplane.translate.locality import (
    Place,
    depends_on_proxy,
    locality_message,
    priority_label_names,
    proxy_groups,
    weighs_localities,
)
from controlplane.translate.names import cluster_name
from controlplane.translate.policy import traffic_policy


@functools.lru_cache(maxsize=1 << 17)
def _lb_endpoint(ip: str, port: int, hostname: str) -> endpoint_components_pb2.LbEndpoint:
    """Memoized: a pod's endpoint appears in its service's assignment and in a subset's,
    and stays the same across pushes (extend() copies it into each assignment). Keyed by
    what it holds, not by the Endpoint: hashing three fields in C beats the dataclass's
    hash in Python, ten thousand times per full translation."""
    return endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(
            address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
                address=ip, port_value=port)),
            hostname=hostname,
        ),
        health_status=health_check_pb2.HEALTHY,
    )


def load_assignment(name: str, endpoints: tuple[Endpoint, ...],
                    policy: TrafficPolicy | None = None, place: Place | None = None
                    ) -> endpoint_pb2.ClusterLoadAssignment:
    """One group of endpoints per locality (translate/locality.py). With a proxy's
    place, the groups are weighed or prioritized for that proxy as `policy` says."""
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    weighted = policy is not None and weighs_localities(policy)
    for g in proxy_groups(policy, endpoints, place):
        group = cla.endpoints.add()
        if not g.emptied:
            group.lb_endpoints.extend(
                [_lb_endpoint(ep.ip, ep.port, ep.hostname) for ep in g.members])
        if g.locality:
            group.locality.CopyFrom(locality_message(g.locality))
        if g.locality or weighted:
            group.load_balancing_weight.value = g.weight
        if g.priority:
            group.priority = g.priority
    return cla


def service_assignments(mesh: Mesh, service: Service, place: Place | None = None
                        ) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """The load assignments of one service's clusters (see service_clusters); with a
    proxy's place, as that proxy gets them (translate/locality.py)."""
    fqdn = service.fqdn
    rule = mesh.destination_rules.get(fqdn)
    out = []
    for port in proxied_ports(service):
        endpoints = mesh.endpoints.get((fqdn, port.port), ())
        policy = traffic_policy(mesh, fqdn, port.port)
        # PASSTHROUGH clusters connect to the original destination: no assignment.
        if not is_passthrough(policy):
            out.append(load_assignment(cluster_name(port.port, fqdn), endpoints, policy,
                                       place))
        for subset in rule.subsets if rule else ():
            policy = traffic_policy(mesh, fqdn, port.port, subset.name)
            if is_passthrough(policy):
                continue
            chosen = tuple(e for e in endpoints if subset.labels <= e.labels)
            out.append(load_assignment(cluster_name(port.port, fqdn, subset.name), chosen,
                                       policy, place))
        for pod_fqdn, pod_endpoints in pod_hosts(mesh, service, port):
            out.append(load_assignment(cluster_name(port.port, pod_fqdn), pod_endpoints))
    return out


def build_load_assignments(mesh: Mesh) -> list[endpoint_pb2.ClusterLoadAssignment]:
    return [a for service in mesh.services.values()
            for a in service_assignments(mesh, service)]


def depends_on_locality(mesh: Mesh, service: Service) -> bool:
    """Whether some proxy's assignments for this service differ with where it runs
    (translate/locality.py): then they are built per proxy locality."""
    fqdn = service.fqdn
    rule = mesh.destination_rules.get(fqdn)
    if rule is None:  # locality load balancing needs a DestinationRule to apply
        return False
    for port in proxied_ports(service):
        endpoints = mesh.endpoints.get((fqdn, port.port), ())
        if depends_on_proxy(traffic_policy(mesh, fqdn, port.port), endpoints):
            return True
        for subset in rule.subsets:
            chosen = [e for e in endpoints if subset.labels <= e.labels]
            if depends_on_proxy(traffic_policy(mesh, fqdn, port.port, subset.name), chosen):
                return True
    return False


def priority_labels(mesh: Mesh, service: Service) -> frozenset[str]:
    """The proxy labels (failoverPriority) this service's assignments are ordered by."""
    fqdn = service.fqdn
    rule = mesh.destination_rules.get(fqdn)
    if rule is None:
        return frozenset()
    names: set[str] = set()
    for port in proxied_ports(service):
        names |= priority_label_names(traffic_policy(mesh, fqdn, port.port))
        for subset in rule.subsets:
            names |= priority_label_names(traffic_policy(mesh, fqdn, port.port, subset.name))
    return frozenset(names)
