"""Which services share each port number: the unit of outbound listeners and routes."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from controlplane.model.mesh import Mesh
from controlplane.model.service import Protocol, Service, ServicePort


@dataclass
class PortGroup:
    port: int
    http: list[tuple[Service, ServicePort]] = field(default_factory=list)
    tcp: list[tuple[Service, ServicePort]] = field(default_factory=list)

    @property
    def is_http(self) -> bool:
        # A port any HTTP service uses gets an HTTP listener; TCP services on the same
        # port are then reachable only by their cluster IP (see listeners.py).
        return bool(self.http)


def port_groups(mesh: Mesh) -> dict[int, PortGroup]:
    groups: dict[int, PortGroup] = defaultdict(lambda: PortGroup(0))
    for service in mesh.services.values():  # in (namespace, name) order: stable output
        for port in service.ports:
            if port.l7 is Protocol.UNSUPPORTED:
                continue
            group = groups[port.port]
            group.port = port.port
            (group.http if port.l7.is_http else group.tcp).append((service, port))
    return dict(sorted(groups.items()))
