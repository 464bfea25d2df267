"""LDS: one outbound listener per service port number, bound to the proxy's IP. TLS
services' chains (by SNI) are built by tls_routes.py."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from google.protobuf import wrappers_pb2

from controlplane.model.mesh import Mesh
from controlplane.model.scoping import NO_CHOICES, HostChoices
from controlplane.model.service import Protocol, Service, ServicePort
from controlplane.translate.destinations import resolve_destination
from controlplane.translate.metadata import VIRTUAL_SERVICE, object_metadata
from controlplane.translate.names import cluster_name, listener_name, route_name
from controlplane.translate.ports import PortGroup, port_groups
from controlplane.translate.protos import ads_source
from controlplane.translate.routes import CORS_FILTER, FAULT_FILTER
from controlplane.translate.tls_routes import default_chain, sni_chains, tls_inspector

HCM_FILTER = "envoy.filters.network.http_connection_manager"
TCP_PROXY_FILTER = "envoy.filters.network.tcp_proxy"
ROUTER_FILTER = "envoy.filters.http.router"


def _filter(name: str, config: object) -> listener_components_pb2.Filter:
    f = listener_components_pb2.Filter(name=name)
    f.typed_config.Pack(config)
    return f


def _http_filter(name: str, config: object) -> hcm_pb2.HttpFilter:
    f = hcm_pb2.HttpFilter(name=name)
    f.typed_config.Pack(config)
    return f


def _http_chain(bind_ip: str, port: int) -> listener_components_pb2.FilterChain:
    # CORS and fault injection do nothing until a route's typed_per_filter_config asks.
    filters = [_http_filter(CORS_FILTER, cors_pb2.Cors()),
               _http_filter(FAULT_FILTER, fault_pb2.HTTPFault()),
               _http_filter(ROUTER_FILTER, router_pb2.Router())]
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix=f"outbound_{bind_ip}_{port}",
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        rds=hcm_pb2.Rds(
            config_source=ads_source(),
            route_config_name=route_name(port),
        ),
        http_filters=filters,
        normalize_path=wrappers_pb2.BoolValue(value=True),
    )
    return listener_components_pb2.FilterChain(filters=[_filter(HCM_FILTER, hcm)])


def _tcp_proxy(mesh: Mesh, service: Service, port: ServicePort,
               choices: HostChoices = NO_CHOICES
               ) -> tuple[tcp_proxy_pb2.TcpProxy, base_pb2.Metadata | None]:
    """To the service's cluster, or where its VirtualService's first `tcp` route that
    matches the port sends it (the one every namespace sees, unless the proxy's view
    chose another: exportTo, Sidecar); with the metadata naming that rule."""
    default = cluster_name(port.port, service.fqdn)
    vs = (choices.overrides[service.fqdn] if service.fqdn in choices.overrides
          else mesh.virtual_services.get(service.fqdn))
    index = next((i for i, r in enumerate(vs.tcp) if not r.ports or port.port in r.ports),
                 None) if vs else None
    route = vs.tcp[index] if vs and index is not None else None
    dests = [d for d in route.route if d.weight > 0] if route else []
    resolved = [resolve_destination(mesh, vs.meta.namespace, d.destination, port.port)[0]
                for d in dests] if vs else []
    metadata = object_metadata(VIRTUAL_SERVICE, vs.meta.namespace, vs.meta.name,
                               {"rule": f"spec.tcp[{index}]"}) if vs and resolved else None
    if len(resolved) > 1:
        proxy = tcp_proxy_pb2.TcpProxy(stat_prefix=default)
        for d, name in zip(dests, resolved, strict=True):
            proxy.weighted_clusters.clusters.add(name=name, weight=d.weight)
        return proxy, metadata
    return tcp_proxy_pb2.TcpProxy(stat_prefix=default, cluster=resolved[0] if resolved
                                  else default), metadata


def _tcp_chain(proxy: tuple[tcp_proxy_pb2.TcpProxy, base_pb2.Metadata | None],
               cluster_ip: str = "") -> listener_components_pb2.FilterChain:
    chain = listener_components_pb2.FilterChain(filters=[_filter(TCP_PROXY_FILTER, proxy[0])])
    if proxy[1] is not None:
        chain.metadata.CopyFrom(proxy[1])
    if cluster_ip:
        chain.filter_chain_match.prefix_ranges.add(
            address_prefix=cluster_ip, prefix_len=wrappers_pb2.UInt32Value(
                value=128 if ":" in cluster_ip else 32))
    return chain


def build_listener(mesh: Mesh, group: PortGroup, bind_ip: str,
                   choices: HostChoices = NO_CHOICES) -> listener_pb2.Listener | None:
    """The port's listener; None when the view hides every service on it."""
    tcp = [(s, p) for s, p in group.tcp if s.fqdn not in choices.hidden]
    if not group.is_http and not tcp:
        return None
    listener = listener_pb2.Listener(
        name=listener_name(bind_ip, group.port),
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=bind_ip, port_value=group.port)),
        traffic_direction=2,  # OUTBOUND
    )
    # TLS services are told apart by SNI (tls_routes.py), the others by cluster IP.
    tls = [(s, p) for s, p in tcp if p.l7 is Protocol.TLS]
    if group.is_http:
        listener.default_filter_chain.CopyFrom(_http_chain(bind_ip, group.port))
    elif tcp:
        # Without an HTTP service on the port, the first TCP service (by namespace, name)
        # takes every connection; others are told apart by their cluster IP
        # (iptables-redirected traffic).
        service, port = tcp.pop(0)
        if port.l7 is not Protocol.TLS:
            listener.default_filter_chain.CopyFrom(_tcp_chain(_tcp_proxy(mesh, service, port,
                                                                         choices)))
        elif (chain := default_chain(mesh, service, port, choices)) is not None:
            listener.default_filter_chain.CopyFrom(chain)
    seen_ips: set[str] = set()
    for service, port in tcp:
        if port.l7 is not Protocol.TLS and service.cluster_ip and \
                service.cluster_ip not in seen_ips:
            seen_ips.add(service.cluster_ip)
            listener.filter_chains.append(
                _tcp_chain(_tcp_proxy(mesh, service, port, choices), service.cluster_ip))
    if tls:
        listener.listener_filters.append(tls_inspector())
        # As Istio: a client that sends nothing first (a server-first protocol on a TCP
        # service sharing the port) is passed on when the inspector gives up, not closed.
        listener.continue_on_listener_filters_timeout = True
        listener.filter_chains.extend(sni_chains(mesh, tls, choices))
    return listener


def build_listeners(mesh: Mesh, bind_ip: str, choices: HostChoices = NO_CHOICES
                    ) -> list[listener_pb2.Listener]:
    """Every port's listener, for proxies binding `bind_ip` whose view makes `choices`
    (which services' TCP chains they lose, which VirtualService routes their TCP)."""
    listeners = (build_listener(mesh, g, bind_ip, choices) for g in port_groups(mesh).values())
    return [listener for listener in listeners if listener is not None]


def route_names(listener: listener_pb2.Listener) -> list[str]:
    """The RDS names a listener subscribes to, for the push order's dependencies."""
    names = []
    for chain in [listener.default_filter_chain, *listener.filter_chains]:
        for f in chain.filters:
            if f.name == HCM_FILTER:
                hcm = hcm_pb2.HttpConnectionManager()
                f.typed_config.Unpack(hcm)
                if hcm.HasField("rds"):
                    names.append(hcm.rds.route_config_name)
    return names
