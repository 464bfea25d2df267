"""Where a VirtualService destination points: its cluster name, FQDN and port."""

from __future__ import annotations

from controlplane.model.mesh import Mesh
from controlplane.model.virtual_service import Destination
from controlplane.translate.names import cluster_name


def resolve_destination(mesh: Mesh, namespace: str, dest: Destination, listener_port: int
                        ) -> tuple[str, str, int]:
    """(cluster name, FQDN, port). A host or subset that does not exist yet still gets
    its future cluster's name: Envoy answers 503 (or closes a TCP connection) until it
    appears, and then routes with no further route push."""
    fqdn = mesh.resolve_host(dest.host, namespace)
    service = mesh.services.get(fqdn)
    port = dest.port
    if port is None:
        # Istio: the only port of the destination, else the port the request came in on.
        port = (service.ports[0].port if service is not None and len(service.ports) == 1
                else listener_port)
    return cluster_name(port, fqdn, dest.subset), fqdn, port
