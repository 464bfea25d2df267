"""EDS: one ClusterLoadAssignment per cluster, named like the cluster."""

from __future__ import annotations

import functools

from envoy.config.core.v3 import address_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from controlplane.model.mesh import Endpoint, Mesh
from controlplane.model.service import Service
from controlplane.translate.clusters import is_passthrough, proxied_ports
from controlplane.translate.headless import pod_hosts
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


def load_assignment(name: str, endpoints: tuple[Endpoint, ...]
                    ) -> endpoint_pb2.ClusterLoadAssignment:
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    if endpoints:
        cla.endpoints.add().lb_endpoints.extend(
            [_lb_endpoint(ep.ip, ep.port, ep.hostname) for ep in endpoints])
    return cla


def service_assignments(mesh: Mesh, service: Service
                        ) -> list[endpoint_pb2.ClusterLoadAssignment]:
    """The load assignments of one service's clusters (see service_clusters)."""
    fqdn = service.fqdn
    rule = mesh.destination_rules.get(fqdn)
    out = []
    for port in proxied_ports(service):
        endpoints = mesh.endpoints.get((fqdn, port.port), ())
        # PASSTHROUGH clusters connect to the original destination: no assignment.
        if not is_passthrough(traffic_policy(mesh, fqdn, port.port)):
            out.append(load_assignment(cluster_name(port.port, fqdn), endpoints))
        for subset in rule.subsets if rule else ():
            if is_passthrough(traffic_policy(mesh, fqdn, port.port, subset.name)):
                continue
            chosen = tuple(e for e in endpoints if subset.labels <= e.labels)
            out.append(load_assignment(cluster_name(port.port, fqdn, subset.name), chosen))
        for pod_fqdn, pod_endpoints in pod_hosts(mesh, service, port):
            out.append(load_assignment(cluster_name(port.port, pod_fqdn), pod_endpoints))
    return out


def build_load_assignments(mesh: Mesh) -> list[endpoint_pb2.ClusterLoadAssignment]:
    return [a for service in mesh.services.values()
            for a in service_assignments(mesh, service)]
