"""Kubernetes Services and the protocol of each port."""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from controlplane.model.errors import Errors
from controlplane.model.fields import as_int, as_labels, as_list, as_map, as_str
from controlplane.model.meta import Meta, parse_meta
from controlplane.model.visibility import service_export_to

DOMAIN_SUFFIX = "svc.cluster.local"
EXPORT_TO_ANNOTATION = "networking.istio.io/exportTo"


class Protocol(enum.Enum):
    HTTP = "HTTP"
    HTTP2 = "HTTP2"  # also gRPC: the upstream speaks HTTP/2
    TCP = "TCP"
    TLS = "TLS"  # TLS or HTTPS: passed through, routed by SNI (never terminated)
    UNSUPPORTED = "UNSUPPORTED"  # UDP, SCTP: not proxied

    @property
    def is_http(self) -> bool:
        return self in (Protocol.HTTP, Protocol.HTTP2)


# Istio's names (port-name prefix or appProtocol). TLS and HTTPS are passed through and
# routed by SNI; databases are TCP. An unknown or missing name is TCP: Istio would
# sniff the protocol, which costs a first-byte delay and surprises people; TCP always works.
_PROTOCOLS = {
    "http": Protocol.HTTP,
    "http2": Protocol.HTTP2,
    "grpc": Protocol.HTTP2,
    "grpc-web": Protocol.HTTP,
    "h2c": Protocol.HTTP2,
    "kubernetes.io/h2c": Protocol.HTTP2,
    "kubernetes.io/ws": Protocol.HTTP,
    "kubernetes.io/wss": Protocol.TLS,
    "https": Protocol.TLS,
    "tls": Protocol.TLS,
    "tcp": Protocol.TCP,
    "mongo": Protocol.TCP,
    "mysql": Protocol.TCP,
    "redis": Protocol.TCP,
    "udp": Protocol.UNSUPPORTED,
}


def named_protocol(name: str, app_protocol: str) -> Protocol | None:
    """The protocol a port's appProtocol, else its name's prefix, says (Istio's naming
    convention: `<protocol>[-<suffix>]`); None when neither names one."""
    if app_protocol:
        return _PROTOCOLS.get(app_protocol.lower())
    lowered = name.lower()
    # The longest prefix first, so "grpc-web-x" is grpc-web and not grpc.
    for prefix in sorted(_PROTOCOLS, key=len, reverse=True):
        if lowered == prefix or lowered.startswith(prefix + "-"):
            return _PROTOCOLS[prefix]
    return None


def detect_protocol(name: str, app_protocol: str, transport: str) -> Protocol:
    if transport != "TCP":
        return Protocol.UNSUPPORTED
    return named_protocol(name, app_protocol) or Protocol.TCP


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int | str  # a number, or the name of a container port
    protocol: str = "TCP"  # the transport: TCP, UDP or SCTP
    app_protocol: str = ""
    l7: Protocol = field(init=False, compare=False)  # what the proxy speaks on it

    def __post_init__(self) -> None:
        object.__setattr__(self, "l7", detect_protocol(self.name, self.app_protocol,
                                                       self.protocol))


@dataclass(frozen=True)
class Service:
    meta: Meta
    ports: tuple[ServicePort, ...]
    cluster_ip: str = ""  # "" when unset; "None" is kept out: see `headless`
    headless: bool = False
    selector: frozenset[tuple[str, str]] | None = None  # None: endpoints are managed by hand
    publish_not_ready: bool = False
    # The networking.istio.io/exportTo annotation's entries ("." "*" "~" or namespaces);
    # empty: the mesh's default.
    export_to: tuple[str, ...] = ()

    @property
    def fqdn(self) -> str:
        return f"{self.meta.name}.{self.meta.namespace}.{DOMAIN_SUFFIX}"

    def port(self, number: int) -> ServicePort | None:
        return next((p for p in self.ports if p.port == number), None)

    def aliases(self) -> list[str]:
        """Every name any client may use for the service, longest first: as Istio's
        domains, the absolute FQDN (trailing dot, which DNS resolves and clients may
        send as the Host) and the cluster IP (an IPv6 one in brackets, as in a Host
        header). Not the bare name, which resolves from its own namespace only. The
        translation's virtual host domains and the shadowed-route analysis both read
        this one list."""
        name, ns = self.meta.name, self.meta.namespace
        names = [self.fqdn, f"{self.fqdn}.", f"{name}.{ns}.svc", f"{name}.{ns}"]
        if self.cluster_ip:
            names.append(host_ip(self.cluster_ip))
        return names


def host_ip(ip: str) -> str:
    """An IP as a Host header carries it: IPv6 in brackets, so a port can follow."""
    return f"[{ip}]" if ":" in ip else ip


def parse_service(raw: dict[str, Any], errs: Errors) -> Service:
    meta = parse_meta(raw, errs, dns_label=True)
    spec = as_map(raw.get("spec"), "spec", errs)
    svc_type = as_str(spec.get("type"), "spec.type", errs) or "ClusterIP"
    ports = []
    seen: set[int] = set()
    for i, p in enumerate(as_list(spec.get("ports"), "spec.ports", errs)):
        path = f"spec.ports[{i}]"
        p = as_map(p, path, errs)
        number = as_int(p.get("port"), f"{path}.port", errs, lo=1, hi=65535, required=True)
        transport = as_str(p.get("protocol"), f"{path}.protocol", errs) or "TCP"
        if transport not in ("TCP", "UDP", "SCTP"):
            errs.add(f"{path}.protocol", f"must be TCP, UDP or SCTP, got {transport!r}")
        target = p.get("targetPort", number)
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        if isinstance(target, bool) or not isinstance(target, int | str) or (
                isinstance(target, int) and not 1 <= target <= 65535) or target == "":
            errs.add(f"{path}.targetPort", f"must be a port number or a port name, got {target!r}")
            target = number or 0
        if number is None:
            continue
        if number in seen and transport == "TCP":
            errs.add(f"{path}.port", f"port {number} is listed twice")
        seen.add(number)
        ports.append(ServicePort(
            name=as_str(p.get("name"), f"{path}.name", errs),
            port=number,
            target_port=target,
            protocol=transport,
            app_protocol=as_str(p.get("appProtocol"), f"{path}.appProtocol", errs),
        ))
    if len(ports) > 1 and any(not p.name for p in ports):
        errs.add("spec.ports", "every port needs a name when a Service has several")
    cluster_ip = as_str(spec.get("clusterIP"), "spec.clusterIP", errs)
    headless = cluster_ip == "None"
    if cluster_ip and not headless:
        try:
            ipaddress.ip_address(cluster_ip)
        except ValueError:
            errs.add("spec.clusterIP", f"must be an IP address or 'None', got {cluster_ip!r}")
            cluster_ip = ""
    selector_raw = spec.get("selector")
    selector = None
    if selector_raw is not None and svc_type != "ExternalName":
        selector = as_labels(selector_raw, "spec.selector", errs) or None
    annotations = as_map(as_map(raw.get("metadata"), "metadata", errs).get("annotations"),
                         "metadata.annotations", errs)
    export_to = annotations.get(EXPORT_TO_ANNOTATION)
    return Service(
        meta=meta,
        ports=tuple(ports),
        cluster_ip="" if headless else cluster_ip,
        headless=headless,
        selector=selector,
        publish_not_ready=bool(spec.get("publishNotReadyAddresses", False)),
        export_to=service_export_to(export_to) if isinstance(export_to, str) else (),
    )
