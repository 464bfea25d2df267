"""RDS: per HTTP port a route configuration named after the port, one virtual host per
service, routes from the service's VirtualService or straight to its cluster."""

from __future__ import annotations

from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from controlplane.model.istio import HTTPMatch, HTTPRoute, StringMatch, VirtualService
from controlplane.model.mesh import Mesh
from controlplane.translate.headless import pod_aliases, pod_hosts
from controlplane.translate.names import (
    cluster_name,
    host_aliases,
    route_name,
    virtual_host_name,
)
from controlplane.translate.ports import port_groups


def _duration(seconds: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def default_retry_policy() -> rc.RetryPolicy:
    """Istio's default: retry twice on another host when a connection fails or an
    endpoint is going away, so rolling a pod costs no request."""
    predicate = rc.RetryPolicy.RetryHostPredicate(
        name="envoy.retry_host_predicates.previous_hosts")
    predicate.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
    return rc.RetryPolicy(
        retry_on="connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        num_retries=wrappers_pb2.UInt32Value(value=2),
        retriable_status_codes=[503],
        retry_host_predicate=[predicate],
        host_selection_retry_max_attempts=5,
    )


def _string_matcher(m: StringMatch, ignore_case: bool = False) -> string_pb2.StringMatcher:
    if m.kind == "regex":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=m.value))
    return string_pb2.StringMatcher(**{m.kind: m.value}, ignore_case=ignore_case)


def _header(name: str, m: StringMatch | None) -> rc.HeaderMatcher:
    if m is None:
        return rc.HeaderMatcher(name=name, present_match=True)
    return rc.HeaderMatcher(name=name, string_match=_string_matcher(m))


def route_match(m: HTTPMatch | None) -> rc.RouteMatch:
    out = rc.RouteMatch()
    uri = m.uri if m else None
    if uri is None:
        out.prefix = "/"
    elif uri.kind == "exact":
        out.path = uri.value
    elif uri.kind == "prefix":
        out.prefix = uri.value
    else:
        # case_sensitive does not reach a regex; RE2's inline flag does (as in Istio).
        out.safe_regex.regex = f"(?i){uri.value}" if m and m.ignore_uri_case else uri.value
    if m is None:
        return out
    if m.ignore_uri_case and uri is not None and uri.kind != "regex":
        out.case_sensitive.value = False
    for name, hm in m.headers:
        out.headers.append(_header(name.lower(), hm))
    if m.method:
        out.headers.append(_header(":method", m.method))
    if m.authority:
        out.headers.append(_header(":authority", m.authority))
    for name, qm in m.query_params:
        qp = out.query_parameters.add(name=name)
        if qm is None:
            qp.present_match = True
        else:
            qp.string_match.CopyFrom(_string_matcher(qm))
    return out


def _destination_cluster(mesh: Mesh, vs: VirtualService, host: str, subset: str,
                         port: int | None, listener_port: int) -> str:
    fqdn = mesh.resolve_host(host, vs.meta.namespace)
    service = mesh.services.get(fqdn)
    if port is None and service is not None:
        # Istio: the only port of the destination, else the port the request came in on.
        port = service.ports[0].port if len(service.ports) == 1 else listener_port
    # A host or subset that does not exist yet still gets its future cluster's name:
    # Envoy answers 503 until it appears, and then routes with no further RDS push.
    return cluster_name(port or listener_port, fqdn, subset)


def _route_action(mesh: Mesh, vs: VirtualService, route: HTTPRoute, port: int) -> rc.RouteAction:
    action = rc.RouteAction(timeout=_duration(route.timeout or 0),
                            retry_policy=default_retry_policy())
    dests = [d for d in route.route if d.weight > 0]
    clusters = [_destination_cluster(mesh, vs, d.destination.host, d.destination.subset,
                                     d.destination.port, port) for d in dests]
    if len(dests) == 1:
        action.cluster = clusters[0]
    else:
        for d, name in zip(dests, clusters, strict=True):
            action.weighted_clusters.clusters.add(name=name, weight=wrappers_pb2.UInt32Value(
                value=d.weight))
    return action


def _vs_routes(mesh: Mesh, vs: VirtualService, port: int) -> list[rc.Route]:
    routes = []
    for i, http in enumerate(vs.http):
        if not http.route:
            continue  # redirect/directResponse routes arrive with the traffic-management work
        action = _route_action(mesh, vs, http, port)
        matches = [m for m in http.matches if m.port in (None, port)] if http.matches else [None]
        if http.matches and not matches:
            continue
        for m in matches:
            routes.append(rc.Route(name=http.name or f"{vs.meta.namespace}.{vs.meta.name}.{i}",
                                   match=route_match(m), route=action))
    return routes


def _default_route(cluster: str) -> rc.Route:
    return rc.Route(
        name="default",
        match=rc.RouteMatch(prefix="/"),
        route=rc.RouteAction(cluster=cluster,
                             timeout=_duration(0), retry_policy=default_retry_policy()),
    )


def _add_host(config: route_pb2.RouteConfiguration, used: set[str], port: int, fqdn: str,
              aliases: list[str], routes: list[rc.Route]) -> None:
    vhost = config.virtual_hosts.add(name=virtual_host_name(fqdn, port))
    for alias in aliases:
        # A domain twice in one route configuration makes Envoy reject all of it: the
        # first service (by FQDN) keeps it.
        for domain in (alias, f"{alias}:{port}"):
            if domain not in used:
                used.add(domain)
                vhost.domains.append(domain)
    vhost.routes.extend(routes)


def build_route_configs(mesh: Mesh, namespace: str) -> list[route_pb2.RouteConfiguration]:
    configs = []
    for number, group in port_groups(mesh).items():
        if not group.is_http:
            continue
        config = route_pb2.RouteConfiguration(name=route_name(number),
                                              validate_clusters=wrappers_pb2.BoolValue())
        used: set[str] = set()
        for service, port in group.http:
            vs = mesh.virtual_services.get(service.fqdn)
            routes = (_vs_routes(mesh, vs, number) if vs
                      else [_default_route(cluster_name(port.port, service.fqdn))])
            _add_host(config, used, number, service.fqdn, host_aliases(service, namespace),
                      routes)
            for pod_fqdn, _ in pod_hosts(mesh, service, port):
                _add_host(config, used, number, pod_fqdn,
                          pod_aliases(pod_fqdn, service, namespace),
                          [_default_route(cluster_name(port.port, pod_fqdn))])
        configs.append(config)
    return configs
