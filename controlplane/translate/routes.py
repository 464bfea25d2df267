"""RDS: per HTTP port a route configuration named after the port, one virtual host per
service, routes from the service's VirtualService (Istio's semantics, first match wins) or
straight to its cluster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.retry.host.previous_hosts.v3 import previous_hosts_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from controlplane.model.destination_rule import ConsistentHash
from controlplane.model.istio_common import StringMatch
from controlplane.model.mesh import Mesh
from controlplane.model.service import Service, ServicePort
from controlplane.model.virtual_service import (
    CorsPolicy,
    Fault,
    HeaderOperations,
    Headers,
    HTTPMatch,
    HTTPRoute,
    Redirect,
    Retries,
    VirtualService,
    query_presence,
)
from controlplane.translate.destinations import resolve_destination
from controlplane.translate.headless import pod_aliases, pod_hosts, pod_short_alias
from controlplane.translate.metadata import VIRTUAL_SERVICE, object_metadata
from controlplane.translate.names import (
    cluster_name,
    host_aliases,
    route_name,
    short_alias,
    virtual_host_name,
)
from controlplane.translate.outbound import CATCH_ALL_DOMAIN, catch_all_virtual_host
from controlplane.translate.policy import traffic_policy
from controlplane.translate.ports import port_groups
from controlplane.translate.protos import duration

CORS_FILTER = "envoy.filters.http.cors"
FAULT_FILTER = "envoy.filters.http.fault"
_REDIRECT_CODES = {301: rc.RedirectAction.MOVED_PERMANENTLY, 302: rc.RedirectAction.FOUND,
                   303: rc.RedirectAction.SEE_OTHER, 307: rc.RedirectAction.TEMPORARY_REDIRECT,
                   308: rc.RedirectAction.PERMANENT_REDIRECT}


def _fraction(percent: float) -> percent_pb2.FractionalPercent:
    # Per million, so Istio's double percentages (0.1 %) keep their precision.
    # Clamped: the model bounds percentages, but a uint32 overflow here would raise.
    numerator = min(max(round(percent * 10_000), 0), 1_000_000)
    return percent_pb2.FractionalPercent(numerator=numerator,
                                         denominator=percent_pb2.FractionalPercent.MILLION)


def _retry_host_predicate() -> rc.RetryPolicy.RetryHostPredicate:
    predicate = rc.RetryPolicy.RetryHostPredicate(
        name="envoy.retry_host_predicates.previous_hosts")
    predicate.typed_config.Pack(previous_hosts_pb2.PreviousHostsPredicate())
    return predicate


def retry_policy(retries: Retries | None) -> rc.RetryPolicy | None:
    """Istio's default without a `retries` block: twice, on another host, when a
    connection fails or an endpoint is going away, so rolling a pod costs no request.
    `attempts: 0` turns retries off."""
    if retries is None:
        retries = Retries(attempts=2)
    if retries.attempts == 0:
        return None
    policy = rc.RetryPolicy(
        retry_on=retries.retry_on,
        num_retries=wrappers_pb2.UInt32Value(value=retries.attempts),
        retriable_status_codes=list(retries.retriable_status_codes),
        retry_host_predicate=[_retry_host_predicate()],
        host_selection_retry_max_attempts=5,
    )
    if retries.per_try_timeout:
        policy.per_try_timeout.CopyFrom(duration(retries.per_try_timeout))
    if retries.backoff:
        policy.retry_back_off.base_interval.CopyFrom(duration(retries.backoff))
    return policy


def default_retry_policy() -> rc.RetryPolicy:
    policy = retry_policy(None)
    assert policy is not None
    return policy


def _string_matcher(m: StringMatch, ignore_case: bool = False) -> string_pb2.StringMatcher:
    if m.kind == "regex":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=m.value))
    return string_pb2.StringMatcher(**{m.kind: m.value}, ignore_case=ignore_case)


def _header(name: str, m: StringMatch | None, invert: bool = False) -> rc.HeaderMatcher:
    if m is None:
        return rc.HeaderMatcher(name=name, present_match=True, invert_match=invert)
    return rc.HeaderMatcher(name=name, string_match=_string_matcher(m), invert_match=invert)


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
        assert m is not None and m.uri_regex is not None
        out.safe_regex.regex = m.uri_regex
    if m is None:
        return out
    if not m.uri_case_sensitive:
        out.case_sensitive.value = False
    for name, hm in m.headers:
        out.headers.append(_header(name.lower(), hm))
    for name, hm in m.without_headers:
        out.headers.append(_header(name.lower(), hm, invert=True))
    if m.method:
        out.headers.append(_header(":method", m.method))
    if m.authority:
        out.headers.append(_header(":authority", m.authority))
    for name, qm in m.query_params:
        qp = out.query_parameters.add(name=name)
        if qm is None or query_presence(qm):
            qp.present_match = True
        else:
            qp.string_match.CopyFrom(_string_matcher(qm))
    return out


def _header_options(ops: HeaderOperations) -> list[base_pb2.HeaderValueOption]:
    overwrite = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    append = base_pb2.HeaderValueOption.APPEND_IF_EXISTS_OR_ADD
    return [base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v),
                                       append_action=action)
            for pairs, action in ((ops.set, overwrite), (ops.add, append)) for k, v in pairs]


def _apply_headers(target: rc.Route | rc.WeightedCluster.ClusterWeight, headers: Headers
                   ) -> None:
    target.request_headers_to_add.extend(_header_options(headers.request))
    target.request_headers_to_remove.extend(headers.request.remove)
    target.response_headers_to_add.extend(_header_options(headers.response))
    target.response_headers_to_remove.extend(headers.response.remove)


def _hash_policies(ch: ConsistentHash) -> list[rc.RouteAction.HashPolicy]:
    hp = rc.RouteAction.HashPolicy
    if ch.header:
        return [hp(header=hp.Header(header_name=ch.header))]
    if ch.cookie:
        cookie = hp.Cookie(name=ch.cookie, path=ch.cookie_path)
        if ch.cookie_ttl is not None:
            cookie.ttl.CopyFrom(duration(ch.cookie_ttl))
        return [hp(cookie=cookie)]
    if ch.source_ip:
        return [hp(connection_properties=hp.ConnectionProperties(source_ip=True))]
    if ch.query_parameter:
        return [hp(query_parameter=hp.QueryParameter(name=ch.query_parameter))]
    return []


def _fault_config(fault: Fault) -> fault_pb2.HTTPFault:
    out = fault_pb2.HTTPFault()
    if fault.delay is not None:
        out.delay.fixed_delay.CopyFrom(duration(fault.delay.seconds))
        out.delay.percentage.CopyFrom(_fraction(fault.delay.percent))
    if fault.abort is not None:
        if fault.abort.http_status is not None:
            out.abort.http_status = fault.abort.http_status
        else:
            out.abort.grpc_status = fault.abort.grpc_status or 0
        out.abort.percentage.CopyFrom(_fraction(fault.abort.percent))
    return out


def _cors_config(cors: CorsPolicy) -> cors_pb2.CorsPolicy:
    out = cors_pb2.CorsPolicy(
        allow_origin_string_match=[_string_matcher(o) for o in cors.allow_origins],
        allow_methods=",".join(cors.allow_methods), allow_headers=",".join(cors.allow_headers),
        expose_headers=",".join(cors.expose_headers))
    if cors.max_age is not None:
        out.max_age = str(int(cors.max_age))
    if cors.allow_credentials is not None:
        out.allow_credentials.value = cors.allow_credentials
    return out


def _redirect(redirect: Redirect, listener_port: int) -> rc.RedirectAction:
    """Istio's redirect. Envoy cannot take the port from the request, but routes are made
    per listener port, so FROM_REQUEST_PORT is that port; a scheme's default port is left
    out of the Location (http on 80, https on 443; a sidecar's scheme is http)."""
    port = listener_port if redirect.port_from_request else redirect.port or 0
    if (port, redirect.scheme or "http") in ((80, "http"), (443, "https")):
        port = 0
    out = rc.RedirectAction(host_redirect=redirect.authority, port_redirect=port,
                            response_code=_REDIRECT_CODES[redirect.code])
    if redirect.scheme:  # a oneof: set only when given, or it would redirect to scheme ""
        out.scheme_redirect = redirect.scheme
    if redirect.prefix_rewrite:
        out.prefix_rewrite = redirect.prefix_rewrite
    elif redirect.uri:
        out.path_redirect = redirect.uri
    return out


def _route_action(mesh: Mesh, vs: VirtualService, route: HTTPRoute, port: int,
                  match: HTTPMatch | None) -> rc.RouteAction:
    action = rc.RouteAction(timeout=duration(route.timeout or 0))
    retry = retry_policy(route.retries)
    if retry is not None:
        action.retry_policy.CopyFrom(retry)
    dests = [d for d in route.route if d.weight > 0]
    resolved = [resolve_destination(mesh, vs.meta.namespace, d.destination, port)
                for d in dests]
    if len(dests) == 1 and not dests[0].headers.request and not dests[0].headers.response:
        action.cluster = resolved[0][0]
        if dests[0].authority is not None:  # the route's own rewrite, if any, wins below
            action.host_rewrite_literal = dests[0].authority
    else:
        # Weights are relative: Envoy splits by each over their sum (no total_weight).
        for d, (name, _, _) in zip(dests, resolved, strict=True):
            weighted = action.weighted_clusters.clusters.add(
                name=name, weight=wrappers_pb2.UInt32Value(value=d.weight))
            _apply_headers(weighted, d.headers)
            if d.authority is not None:
                weighted.host_rewrite_literal = d.authority
    # Consistent hashing needs the route to compute the hash: the destinations' policy,
    # when they agree on one.
    hashes = {traffic_policy(mesh, fqdn, p, d.destination.subset).load_balancer
              for d, (_, fqdn, p) in zip(dests, resolved, strict=True)}
    if len(hashes) == 1 and (lb := hashes.pop()) is not None and lb.consistent_hash:
        action.hash_policy.extend(_hash_policies(lb.consistent_hash))
    for mirror in route.mirrors:
        name, _, _ = resolve_destination(mesh, vs.meta.namespace, mirror.destination, port)
        policy = action.request_mirror_policies.add(cluster=name)
        policy.runtime_fraction.default_value.CopyFrom(_fraction(mirror.percent))
    if route.rewrite is not None:
        rewrite = route.rewrite
        if rewrite.uri is not None:
            if match is not None and match.uri is not None and match.uri.kind == "regex":
                # The whole path was matched by a regex: it is replaced whole.
                action.regex_rewrite.pattern.regex = "^.*$"
                action.regex_rewrite.substitution = rewrite.uri
            else:
                action.prefix_rewrite = rewrite.uri
        if rewrite.uri_regex is not None:
            action.regex_rewrite.pattern.regex = rewrite.uri_regex[0]
            action.regex_rewrite.substitution = rewrite.uri_regex[1]
        if rewrite.authority is not None:
            action.host_rewrite_literal = rewrite.authority
    return action


# Which matches the asking proxy takes (sourceLabels, sourceNamespace, gateways);
# None: all of them.
MatchFilter = Callable[[HTTPMatch], bool] | None


def _route_metadata(vs: VirtualService, http: HTTPRoute, index: int, match: int
                    ) -> base_pb2.Metadata:
    """The VirtualService and rule a route came from (a merged route: the root's rule
    and the delegate's), for `controlplane explain`."""
    ours: dict[str, str] = {}
    if http.origin is not None and http.origin_rules is not None:
        root, leaf = http.origin_rules
        ours["rule"] = f"spec.http[{root}]"
        ours["delegate"] = f"{http.origin.namespace}/{http.origin.name} spec.http[{leaf}]"
    else:
        ours["rule"] = f"spec.http[{index}]" + (f".match[{match}]" if http.matches else "")
    return object_metadata(VIRTUAL_SERVICE, vs.meta.namespace, vs.meta.name, ours)


def _vs_routes(mesh: Mesh, vs: VirtualService, port: int, keep: MatchFilter = None
               ) -> list[rc.Route]:
    routes = []
    for i, http in enumerate(vs.http):
        matches: list[tuple[int, HTTPMatch | None]] = (
            [(j, m) for j, m in enumerate(http.matches)
             if m.port in (None, port) and (keep is None or keep(m))]
            if http.matches else [(0, None)])
        for j, m in matches:
            name = http.name or f"{vs.meta.namespace}.{vs.meta.name}.{i}"
            if m is not None and m.name:  # istiod's naming: "<route>.<match>"
                name = f"{name}.{m.name}"
            route = rc.Route(name=name, match=route_match(m),
                             metadata=_route_metadata(vs, http, i, j))
            if http.redirect is not None:
                route.redirect.CopyFrom(_redirect(http.redirect, port))
            elif http.direct_response is not None:
                route.direct_response.status = http.direct_response.status
                if http.direct_response.body is not None:
                    route.direct_response.body.inline_bytes = http.direct_response.body
            else:
                route.route.CopyFrom(_route_action(mesh, vs, http, port, m))
            _apply_headers(route, http.headers)
            if http.fault is not None:
                route.typed_per_filter_config[FAULT_FILTER].Pack(_fault_config(http.fault))
            if http.cors is not None:
                route.typed_per_filter_config[CORS_FILTER].Pack(_cors_config(http.cors))
            routes.append(route)
    return routes


def _default_route(cluster: str, hash_policies: list[rc.RouteAction.HashPolicy] | None = None
                   ) -> rc.Route:
    action = rc.RouteAction(cluster=cluster, timeout=duration(0),
                            retry_policy=default_retry_policy())
    action.hash_policy.extend(hash_policies or [])
    return rc.Route(name="default", match=rc.RouteMatch(prefix="/"), route=action)


def _service_hash(mesh: Mesh, fqdn: str, port: int) -> list[rc.RouteAction.HashPolicy]:
    lb = traffic_policy(mesh, fqdn, port).load_balancer
    return _hash_policies(lb.consistent_hash) if lb and lb.consistent_hash else []


@dataclass(eq=False)
class RouteHost:
    """One virtual host of a base. Compared and hashed as itself: the push loop keeps
    its serialized form per host object (controlplane.translation)."""

    namespace: str
    short: str  # the alias only proxies of `namespace` get ("" for none)
    vhost: rc.VirtualHost  # without it: shared by every namespace
    # What it routes for: a proxy's view may hide it or route it otherwise.
    service: Service | None = None
    port: ServicePort | None = None
    pod: bool = False  # a headless service's per-pod host (straight to the pod)


@dataclass
class RouteBase:
    """One port's virtual hosts, built once per mesh; each namespace's route
    configuration is this plus the short names of its own services."""

    port: int
    hosts: list[RouteHost] = field(default_factory=list)
    used: set[str] = field(default_factory=set)  # the domains the base already holds

    def add(self, namespace: str, fqdn: str, aliases: list[str], short: str,
            routes: list[rc.Route], service: Service | None = None,
            port: ServicePort | None = None, pod: bool = False) -> None:
        vhost = rc.VirtualHost(name=virtual_host_name(fqdn, self.port))
        for alias in aliases:
            # A domain twice in one route configuration makes Envoy reject all of it:
            # the first service (by namespace, then name) keeps it.
            for domain in (alias, f"{alias}:{self.port}"):
                if domain not in self.used:
                    self.used.add(domain)
                    vhost.domains.append(domain)
        vhost.routes.extend(routes)
        self.hosts.append(RouteHost(namespace, short, vhost, service, port, pod))


_SHARED = object()  # service_routes: the VirtualService every namespace shares


def service_routes(mesh: Mesh, service: Service, port: ServicePort, number: int,
                   vs: VirtualService | object | None = _SHARED, keep: MatchFilter = None
                   ) -> list[rc.Route]:
    """A service port's routes: its VirtualService's (the shared one unless `vs` says
    which, or None for none; only the matches `keep` takes), else straight to its
    cluster — also when no route of the VirtualService is left for the proxy, as in
    Istio."""
    chosen = mesh.virtual_services.get(service.fqdn) if vs is _SHARED else vs
    if isinstance(chosen, VirtualService):
        routes = _vs_routes(mesh, chosen, number, keep)
        if routes:
            return routes
    return [_default_route(cluster_name(port.port, service.fqdn),
                           _service_hash(mesh, service.fqdn, port.port))]


def plain_routes(service: Service, port: ServicePort) -> list[rc.Route]:
    """Straight to the service's cluster, nothing taken from a VirtualService or a
    DestinationRule: what a virtual host falls back to when its own routes failed."""
    return [_default_route(cluster_name(port.port, service.fqdn))]


# (service, port, number, build) -> the routes to use: lets the push loop check what
# `build` makes and fall back per virtual host (see controlplane.pipeline).
RouteGuard = Callable[[Service, ServicePort, int, Callable[[], list[rc.Route]]],
                      list[rc.Route]]


def route_bases(mesh: Mesh, guard: RouteGuard | None = None) -> list[RouteBase]:
    bases = []
    for number, group in port_groups(mesh).items():
        if not group.is_http:
            continue
        base = RouteBase(number)
        for service, port in group.http:
            build = partial(service_routes, mesh, service, port, number)
            routes = guard(service, port, number, build) if guard is not None else build()
            ns = service.meta.namespace
            base.add(ns, service.fqdn, host_aliases(service), short_alias(service), routes,
                     service, port)
            for pod_fqdn, _ in pod_hosts(mesh, service, port):
                base.add(ns, pod_fqdn, pod_aliases(pod_fqdn, service),
                         pod_short_alias(pod_fqdn, service),
                         [_default_route(cluster_name(port.port, pod_fqdn))], service, port,
                         pod=True)
        if CATCH_ALL_DOMAIN not in base.used:  # any other Host: the outbound traffic policy
            base.used.add(CATCH_ALL_DOMAIN)
            base.hosts.append(RouteHost("", "", catch_all_virtual_host(
                mesh.config.outbound_traffic_policy)))
        bases.append(base)
    return bases


def namespace_hosts(base: RouteBase, namespace: str
                    ) -> Iterator[tuple[RouteHost, list[str]]]:
    """Each virtual host of `base` and the short-name domains it takes on for proxies of
    `namespace` (none unless the service is in it and the domain is still free)."""
    used = base.used
    for host in base.hosts:
        extra = [d for d in (host.short, f"{host.short}:{base.port}")
                 if host.short and host.namespace == namespace and d not in used]
        if extra:
            used = used | set(extra)
        yield host, extra


def with_domains(vhost: rc.VirtualHost, extra: list[str]) -> rc.VirtualHost:
    """A copy of `vhost` that also answers `extra`."""
    out = rc.VirtualHost()
    out.CopyFrom(vhost)
    out.domains.extend(extra)
    return out


def with_routes(vhost: rc.VirtualHost, routes: list[rc.Route]) -> rc.VirtualHost:
    """A copy of `vhost` (name, domains) with these routes instead of its own."""
    out = rc.VirtualHost(name=vhost.name, domains=vhost.domains)
    out.routes.extend(routes)
    return out


def route_config_shell(base: RouteBase) -> route_pb2.RouteConfiguration:
    """The port's route configuration without its virtual hosts."""
    return route_pb2.RouteConfiguration(name=route_name(base.port),
                                        validate_clusters=wrappers_pb2.BoolValue())


def route_configs(bases: list[RouteBase], namespace: str) -> list[route_pb2.RouteConfiguration]:
    """Each port's route configuration for proxies of `namespace`. (The push loop
    publishes the same in wire form, each virtual host serialized once per mesh:
    controlplane.translation.route_config_bodies; a test holds the two equal.)"""
    configs = []
    for base in bases:
        config = route_config_shell(base)
        for host, extra in namespace_hosts(base, namespace):
            config.virtual_hosts.append(with_domains(host.vhost, extra) if extra
                                        else host.vhost)
        configs.append(config)
    return configs


def build_route_configs(mesh: Mesh, namespace: str) -> list[route_pb2.RouteConfiguration]:
    return route_configs(route_bases(mesh), namespace)
