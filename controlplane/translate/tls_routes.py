"""The filter chains of TLS services (port protocol `tls`, `https`): TLS passes through
untouched (the client's session ends at the upstream) and the listener's tls_inspector
reads the SNI of the ClientHello to choose the chain.

Istio's sidecar (buildSidecarOutboundTLSFilterChainOpts), on the one listener per port
number that every service of the port shares here:

- a service whose VirtualService has `tls` routes gets a chain per route match that
  applies to the port (server_names = the match's sniHosts, prefix_ranges = its
  destinationSubnets), each a tcp_proxy to the route's (weighted) destinations; of two
  matches with the same SNI hosts and subnets only the first is used, as in Istio;
- a service without one gets a chain for its own names (FQDN, `name.ns.svc`, `name.ns`)
  to its cluster: Istio's passthrough, where the service's hostname is the SNI match
  once the listener is not bound to the service's own address.

A connection whose SNI no chain names (or that sends none) is treated as Istio treats a
connection to the port's first service's address (see `default_chain`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import wrappers_pb2

from controlplane.model.mesh import Mesh
from controlplane.model.mesh_config import REGISTRY_ONLY
from controlplane.model.scoping import NO_CHOICES, HostChoices
from controlplane.model.service import Service, ServicePort
from controlplane.model.virtual_service import TLSRoute
from controlplane.translate.destinations import resolve_destination
from controlplane.translate.metadata import VIRTUAL_SERVICE, object_metadata
from controlplane.translate.names import cluster_name, host_aliases

TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"


def tls_inspector() -> listener_components_pb2.ListenerFilter:
    f = listener_components_pb2.ListenerFilter(name=TLS_INSPECTOR)
    f.typed_config.Pack(tls_inspector_pb2.TlsInspector())
    return f


@dataclass(frozen=True)
class _Chain:
    server_names: tuple[str, ...]
    subnets: tuple[str, ...]
    proxy: tcp_proxy_pb2.TcpProxy
    origin: base_pb2.Metadata | None = None  # the `tls` rule behind it (metadata.py)


def _own_cluster(service: Service, port: ServicePort) -> tcp_proxy_pb2.TcpProxy:
    name = cluster_name(port.port, service.fqdn)
    return tcp_proxy_pb2.TcpProxy(stat_prefix=name, cluster=name)


def _route_proxy(mesh: Mesh, namespace: str, route: TLSRoute, port: ServicePort,
                 stat_prefix: str) -> tcp_proxy_pb2.TcpProxy:
    dests = [d for d in route.route if d.weight > 0]
    names = [resolve_destination(mesh, namespace, d.destination, port.port)[0] for d in dests]
    if len(names) == 1:
        return tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix, cluster=names[0])
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=stat_prefix)
    for d, name in zip(dests, names, strict=True):
        proxy.weighted_clusters.clusters.add(name=name, weight=d.weight)
    return proxy


def own_names(service: Service) -> tuple[str, ...]:
    """The names a client may send as SNI for the service: not its cluster IP (no name),
    nor the absolute FQDN (an SNI never carries the trailing dot, RFC 6066)."""
    return tuple(n for n in host_aliases(service)
                 if n != service.cluster_ip and not n.endswith("."))


def routed(mesh: Mesh, service: Service, port: ServicePort,
           choices: HostChoices = NO_CHOICES) -> bool:
    """Whether the service's VirtualService has a `tls` route match for this port."""
    return next(_route_chains(mesh, service, port, choices), None) is not None


def _route_chains(mesh: Mesh, service: Service, port: ServicePort,
                  choices: HostChoices) -> Iterator[_Chain]:
    # The VirtualService every namespace sees, unless the proxy's view chose another
    # (exportTo, Sidecar), as for tcp routes.
    vs = (choices.overrides[service.fqdn] if service.fqdn in choices.overrides
          else mesh.virtual_services.get(service.fqdn))
    if vs is None:
        return
    stat_prefix = cluster_name(port.port, service.fqdn)
    for i, route in enumerate(vs.tls):
        proxy = None
        for j, match in enumerate(route.matches):
            if match.port not in (None, port.port) or not match.applies_to_sidecars:
                continue
            proxy = proxy or _route_proxy(mesh, vs.meta.namespace, route, port, stat_prefix)
            yield _Chain(match.sni_hosts, match.destination_subnets, proxy, object_metadata(
                VIRTUAL_SERVICE, vs.meta.namespace, vs.meta.name,
                {"rule": f"spec.tls[{i}].match[{j}]"}))


def _service_chains(mesh: Mesh, service: Service, port: ServicePort,
                    choices: HostChoices) -> list[_Chain]:
    chains = list(_route_chains(mesh, service, port, choices))
    if not chains or mesh.config.outbound_traffic_policy != REGISTRY_ONLY:
        # Without routes: Istio's passthrough to the service. With routes, a connection
        # naming the service itself that no route matches goes, in Istio, to the
        # PassthroughCluster, i.e. on to the address it was sent to: the service.
        # Under REGISTRY_ONLY Istio drops it (BlackHoleCluster), so no chain.
        chains.append(_Chain(own_names(service), (), _own_cluster(service, port)))
    return chains


def _claim(chain: _Chain, claimed: set[tuple[str, str]]) -> _Chain | None:
    """The chain without the (subnet, server name) pairs an earlier chain holds: Envoy
    rejects a listener where two chains share one (two routes naming one SNI host, two
    services' names). None when nothing is left."""
    subnets = chain.subnets or ("",)
    names = tuple(n for n in chain.server_names
                  if not any((s, n) in claimed for s in subnets))
    if not names:
        return None
    claimed.update((s, n) for s in subnets for n in names)
    return _Chain(names, chain.subnets, chain.proxy, chain.origin)


def _filter_chain(chain: _Chain) -> listener_components_pb2.FilterChain:
    out = listener_components_pb2.FilterChain()
    f = out.filters.add(name=TCP_PROXY_FILTER)
    f.typed_config.Pack(chain.proxy)
    if chain.origin is not None:
        out.metadata.CopyFrom(chain.origin)
    match = out.filter_chain_match
    match.server_names.extend(sorted(chain.server_names))
    for subnet in sorted(chain.subnets):
        net = ipaddress.ip_network(subnet)
        match.prefix_ranges.add(address_prefix=str(net.network_address),
                                prefix_len=wrappers_pb2.UInt32Value(value=net.prefixlen))
    return out


def sni_chains(mesh: Mesh, services: list[tuple[Service, ServicePort]],
               choices: HostChoices = NO_CHOICES) -> list[listener_components_pb2.FilterChain]:
    """The chains of the port's TLS services, in (namespace, name) order."""
    claimed: set[tuple[str, str]] = set()
    out = []
    for service, port in services:
        for chain in _service_chains(mesh, service, port, choices):
            kept = _claim(chain, claimed)
            if kept is not None:
                out.append(_filter_chain(kept))
    return out


def default_chain(mesh: Mesh, service: Service, port: ServicePort,
                  choices: HostChoices = NO_CHOICES
                  ) -> listener_components_pb2.FilterChain | None:
    """Where a connection goes when no chain names its SNI, the port's first service
    being a TLS one. In Istio that service's own listener sends such a connection to the
    service when it has no `tls` routes (its only chain matches everything), else to the
    PassthroughCluster, i.e. on to the address it was sent to (the service again), or,
    under REGISTRY_ONLY, to the BlackHoleCluster: here no default chain, so Envoy closes
    the connection."""
    if (routed(mesh, service, port, choices)
            and mesh.config.outbound_traffic_policy == REGISTRY_ONLY):
        return None
    chain = listener_components_pb2.FilterChain()
    f = chain.filters.add(name=TCP_PROXY_FILTER)
    f.typed_config.Pack(_own_cluster(service, port))
    return chain
