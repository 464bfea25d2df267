"""Per-pod hosts of headless services: `<hostname>.<service>.<namespace>.svc.cluster.local`
reaches exactly that pod, as Kubernetes DNS promises StatefulSet pods.

Each pod hostname gets an EDS cluster of its own, so a pod recreated with a new IP is an
endpoint update (EDS only), never a cluster or route change. The hostnames come from the
Mesh (`Mesh.pod_hostnames`: ready or not, and pods not yet or no longer published), so a
StatefulSet pod being replaced keeps its host; with no ready endpoint Envoy answers 503,
not 404.
"""

from __future__ import annotations

from controlplane.model.mesh import Endpoint, Mesh
from controlplane.model.service import Service, ServicePort


def pod_hosts(mesh: Mesh, service: Service, port: ServicePort
              ) -> list[tuple[str, tuple[Endpoint, ...]]]:
    """(pod FQDN, its ready endpoints, maybe none) for each pod hostname of a headless
    service's HTTP port. TCP ports cannot tell hosts apart, so they get none."""
    if not service.headless or not port.l7.is_http:
        return []
    by_host: dict[str, list[Endpoint]] = {
        h: [] for h in mesh.pod_hostnames.get(service.fqdn, ())}
    for ep in mesh.endpoints.get((service.fqdn, port.port), ()):
        if ep.hostname in by_host:
            by_host[ep.hostname].append(ep)
    return [(f"{h}.{service.fqdn}", tuple(eps)) for h, eps in by_host.items()]


def pod_aliases(pod_fqdn: str, service: Service) -> list[str]:
    hostname = pod_fqdn.split(".", 1)[0]
    name, ns = service.meta.name, service.meta.namespace
    return [pod_fqdn, f"{pod_fqdn}.", f"{hostname}.{name}.{ns}.svc", f"{hostname}.{name}.{ns}"]


def pod_short_alias(pod_fqdn: str, service: Service) -> str:
    """`<pod>.<service>`: only from the service's own namespace."""
    return f"{pod_fqdn.split('.', 1)[0]}.{service.meta.name}"
