"""Service ports whose protocol is not what people think (CP0120, CP0121).

A port's protocol comes from its appProtocol, else its name's prefix (Istio's naming
convention, `<protocol>[-<suffix>]`: model/service.py). Neither saying anything means
opaque TCP here (Istio would sniff): HTTP routes, retries and timeouts do not apply.
Services sharing one port number share one outbound listener (translate/ports.py,
listeners.py): a port any service speaks HTTP on gets an HTTP listener, and a TCP
service on it is reached only through its cluster IP (redirected traffic) — never when
it has none (headless).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from controlplane.analysis.checks.common import finding, of_kind, ref
from controlplane.analysis.findings import Finding
from controlplane.analysis.inputs import Inputs
from controlplane.model.service import Protocol, Service, named_protocol

_FIX_NAME = ("name the port `<protocol>[-<suffix>]` (http, http2, grpc, grpc-web, https, "
             "tls, tcp, mongo, mysql, redis) or set appProtocol; `tcp-…` if TCP is meant")


def port_protocols(inputs: Inputs) -> Iterator[Finding]:
    for service in of_kind(inputs, Service):
        for i, port in enumerate(service.ports):
            if port.protocol != "TCP" or named_protocol(port.name, port.app_protocol):
                continue
            if port.app_protocol:
                yield finding(
                    "CP0120", service, f"spec.ports[{i}].appProtocol",
                    f"port {port.port}: appProtocol {port.app_protocol!r} names no protocol "
                    "known here, so the port is served as opaque TCP (HTTP routes do not "
                    "apply)", "set appProtocol to http, http2, grpc, https, tls or tcp")
            else:
                said = f"name {port.name!r}" if port.name else "no name"
                yield finding(
                    "CP0120", service, f"spec.ports[{i}]" + (".name" if port.name else ""),
                    f"port {port.port} has {said} and no appProtocol, so it is served as "
                    "opaque TCP (HTTP routes, retries and timeouts do not apply; Istio would "
                    "sniff the protocol instead)", _FIX_NAME)


def port_conflicts(inputs: Inputs) -> Iterator[Finding]:
    http: dict[int, list[Service]] = defaultdict(list)
    tcp: dict[int, list[tuple[Service, int]]] = defaultdict(list)
    for service in inputs.mesh.services.values():
        for i, port in enumerate(service.ports):
            if port.l7.is_http:
                http[port.port].append(service)
            elif port.l7 is Protocol.TCP:
                tcp[port.port].append((service, i))
    for number in sorted(http.keys() & tcp.keys()):
        speakers = http[number]
        names = ", ".join(ref(s) for s in speakers[:3]) + (
            f" and {len(speakers) - 3} more" if len(speakers) > 3 else "")
        for service, i in tcp[number]:
            if service.headless:
                reach = "it is headless (no cluster IP), so no connection reaches it"
            elif not service.cluster_ip:
                reach = ("it has no cluster IP here, so no connection reaches it (with one, "
                         "only traffic redirected to that IP would)")
            else:
                reach = (f"it is reached only through its cluster IP {service.cluster_ip} "
                         "(redirected traffic), not by name through the sidecar's port")
            yield finding(
                "CP0121", service, f"spec.ports[{i}]",
                f"port {number} speaks HTTP for {names}, so the sidecar's listener on "
                f"{number} is an HTTP listener; this service's port is TCP: {reach}",
                f"give the services one protocol on port {number}, or move this one to "
                "another port number")


CHECKS = [port_protocols, port_conflicts]
