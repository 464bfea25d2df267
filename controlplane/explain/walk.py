"""The walk: one request (or connection) through one proxy's configuration, step by step
as Envoy takes it — listener, filter chain, route configuration, virtual host, route,
action, clusters, endpoints, policies — with why at each step. Pure: a parsed config
dump in, an `Explanation` out."""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

from controlplane.explain.dump import ConfigDump, Json
from controlplane.explain.matching import (
    fraction_percent,
    listener_address,
    match_conditions,
    route_mismatch,
    select_filter_chain,
    select_virtual_host,
)
from controlplane.explain.paths import PathHandling, handle_path
from controlplane.explain.request import Request

HCM = "envoy.filters.network.http_connection_manager"
TCP_PROXY = "envoy.filters.network.tcp_proxy"
FAULT = "envoy.filters.http.fault"
CORS = "envoy.filters.http.cors"
# The metadata the translator puts on routes and clusters: Istio's key (the object, as
# istiod writes it) and ours (which rule, which policy level).
ISTIO = "istio"
OURS = "controlplane"
_PASSTHROUGH, _BLACKHOLE = "PassthroughCluster", "BlackHoleCluster"


@dataclass
class Endpoint:
    address: str
    health: str  # Envoy's health_status, HEALTHY when unset
    pod: str = ""  # namespace/name, when the control plane knows the address
    locality: str = ""
    priority: int = 0
    weight: int | None = None


@dataclass
class Policy:
    name: str  # timeout, retries, outlier detection...
    value: str
    source: str = ""  # where it came from: VirtualService rule, DestinationRule level


@dataclass
class Destination:
    cluster: str
    weight: int | None = None
    percent: float = 100.0
    service: str = ""  # the host in the cluster name
    subset: str = ""
    port: int | None = None
    known: bool = True  # the proxy holds the cluster
    destination_rule: str = ""
    endpoints: list[Endpoint] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)


@dataclass
class Skipped:
    route: str
    reason: str
    virtual_service: str = ""
    rule: str = ""


@dataclass
class Explanation:
    request: dict[str, Any]
    proxy: str = ""
    listener: str = ""
    listener_address: str = ""
    filter_chain: str = ""
    route_config: str = ""
    virtual_host: str = ""
    domain: str = ""
    domain_match: str = ""
    skipped: list[Skipped] = field(default_factory=list)
    route: str = ""
    match: list[str] = field(default_factory=list)
    virtual_service: str = ""
    rule: str = ""
    delegate: str = ""
    action: str = ""  # route, redirect, direct_response, fault_abort, tcp_proxy, none
    answer: str = ""  # what the client gets when the proxy answers itself
    status: int | None = None  # that answer's HTTP status
    destinations: list[Destination] = field(default_factory=list)
    policies: list[Policy] = field(default_factory=list)
    routed: bool = False  # reaches a service (or an answer a VirtualService chose)
    verdict: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- metadata ---------------------------------------------------------------------------

def _filter_metadata(resource: Json) -> dict[str, Any]:
    md = resource.get("metadata", {}).get("filter_metadata", {})
    return md if isinstance(md, dict) else {}


def config_object(resource: Json) -> str:
    """`kind namespace/name` from Istio's `istio.config` metadata
    (/apis/networking.istio.io/v1/namespaces/NS/virtual-service/NAME), or ""."""
    path = str(_filter_metadata(resource).get(ISTIO, {}).get("config", ""))
    parts = path.strip("/").split("/")
    if len(parts) >= 7 and parts[3] == "namespaces":
        return f"{parts[4]}/{parts[6]}"
    return ""


def _route_origin(route: Json) -> tuple[str, str, str]:
    """(VirtualService ns/name, rule, delegate ns/name) of a route: from its metadata
    when the translator put it there, else from the name `<ns>.<vs>.<index>` it gives
    unnamed rules (a user's route name says nothing)."""
    vs = config_object(route)
    ours = _filter_metadata(route).get(OURS, {})
    if vs:
        return vs, str(ours.get("rule", "")), str(ours.get("delegate", ""))
    name = str(route.get("name", ""))
    parts = name.split(".")
    if len(parts) == 3 and parts[2].isdigit():
        return f"{parts[0]}/{parts[1]}", f"spec.http[{parts[2]}]", ""
    return "", "", ""


# -- clusters ---------------------------------------------------------------------------

def split_cluster_name(name: str) -> tuple[str, str, int | None]:
    """(host, subset, port) from Istio's `outbound|port|subset|host`."""
    parts = name.split("|")
    if len(parts) == 4 and parts[1].isdigit():
        return parts[3], parts[2], int(parts[1])
    return "", "", None


def _address(a: Json) -> str:
    sa = a.get("socket_address")
    if sa:
        ip = str(sa.get("address", ""))
        return f"[{ip}]:{sa.get('port_value', 0)}" if ":" in ip else \
            f"{ip}:{sa.get('port_value', 0)}"
    if "pipe" in a:
        return str(a["pipe"].get("path", ""))
    return "?"


def _endpoints(cla: Json | None, pods: dict[str, str]) -> list[Endpoint]:
    out = []
    for group in (cla or {}).get("endpoints", []):
        loc = group.get("locality", {})
        locality = "/".join(str(loc[k]) for k in ("region", "zone", "sub_zone") if loc.get(k))
        for lb in group.get("lb_endpoints", []):
            addr = lb.get("endpoint", {}).get("address", {})
            ip = str(addr.get("socket_address", {}).get("address", ""))
            weight = lb.get("load_balancing_weight")
            out.append(Endpoint(address=_address(addr),
                                health=str(lb.get("health_status", "HEALTHY")),
                                pod=pods.get(ip, ""), locality=locality,
                                priority=int(group.get("priority", 0)),
                                weight=int(weight) if weight is not None else None))
    return out


def _duration(d: Any) -> str:
    return str(d) if d is not None else ""


_MAX = 4294967295


def cluster_policies(cluster: Json) -> list[Policy]:
    """The policies a cluster holds, each with the DestinationRule level it came from when
    the translator recorded it (metadata `controlplane.policy`); Istio's defaults say
    nothing and are left out."""
    sources = _filter_metadata(cluster).get(OURS, {}).get("policy", {})
    sources = sources if isinstance(sources, dict) else {}
    out: list[Policy] = []

    def add(name: str, value: str, key: str) -> None:
        out.append(Policy(name, value, str(sources.get(key, ""))))
    lb = cluster.get("lb_policy", "ROUND_ROBIN")
    if lb != "ROUND_ROBIN" or "loadBalancer" in sources:
        add("load balancer", str(lb), "loadBalancer")
    ct = cluster.get("connect_timeout")
    if ct not in (None, "10s"):  # Istio's default says nothing
        add("connect timeout", _duration(ct), "connectionPool")
    for t in cluster.get("circuit_breakers", {}).get("thresholds", []):
        limits = [f"{k}={t[k]}" for k in ("max_connections", "max_pending_requests",
                                          "max_requests", "max_retries")
                  if k in t and int(t[k]) != _MAX]
        if limits:
            add("circuit breakers", ", ".join(limits), "connectionPool")
    od = cluster.get("outlier_detection")
    if od:
        parts = [f"{k}={od[k]}" for k in ("consecutive_5xx", "consecutive_gateway_failure",
                                          "interval", "base_ejection_time",
                                          "max_ejection_percent") if k in od]
        add("outlier detection", ", ".join(parts), "outlierDetection")
    panic = cluster.get("common_lb_config", {}).get("healthy_panic_threshold", {})
    if panic and panic.get("value") not in (None, 0, 0.0):
        add("panic threshold", f"{panic['value']}%", "outlierDetection")
    ts = cluster.get("transport_socket")
    if ts:
        tls = ts.get("typed_config", {})
        sni = tls.get("sni", "")
        certs = tls.get("common_tls_context", {})
        mutual = bool(certs.get("tls_certificates")
                      or certs.get("tls_certificate_sds_secret_configs"))
        add("TLS", ("MUTUAL" if mutual else "SIMPLE") + (f", SNI {sni}" if sni else ""), "tls")
    return out


def _destination(dump: ConfigDump, name: str, weight: int | None, percent: float,
                 pods: dict[str, str]) -> Destination:
    host, subset, port = split_cluster_name(name)
    cluster = dump.clusters.get(name)
    dest = Destination(cluster=name, weight=weight, percent=percent, service=host,
                       subset=subset, port=port, known=cluster is not None)
    if cluster is None:
        return dest
    dest.destination_rule = config_object(cluster)
    dest.policies = cluster_policies(cluster)
    if cluster.get("type", "EDS") == "EDS":
        eds = cluster.get("eds_cluster_config", {}).get("service_name") or name
        dest.endpoints = _endpoints(dump.endpoints.get(eds), pods)
    else:
        dest.endpoints = _endpoints(cluster.get("load_assignment"), pods)
    return dest


# -- the route's action -----------------------------------------------------------------

def _strip_port(authority: str) -> str:
    host, sep, port = authority.rpartition(":")
    return host if sep and port.isdigit() and not host.endswith(":") else authority


def _redirect_location(r: Json, match: Json, req: Request) -> str:
    """The Location Envoy writes (http/utility.cc newUri): host_redirect replaces the
    whole authority; port_redirect the request's port; path_redirect the path, keeping
    the request's query unless it has its own; prefix_rewrite the matched prefix."""
    scheme = r.get("scheme_redirect") or ("https" if r.get("https_redirect") else "http")
    port = f":{r['port_redirect']}" if r.get("port_redirect") else ""
    host = r.get("host_redirect") or (_strip_port(req.authority) if port else req.authority)
    path = req.path
    query = req.path.partition("?")[2]
    new_path = str(r.get("path_redirect", ""))
    if new_path:
        path = new_path if "?" in new_path or not query else f"{new_path}?{query}"
    elif "prefix_rewrite" in r and "prefix" in match:
        path = str(r["prefix_rewrite"]) + req.path[len(match["prefix"]):]
    if not path.startswith("/"):
        path = "/" + path
    if r.get("strip_query") and "?" not in new_path:
        path = path.partition("?")[0]
    return f"{scheme}://{host}{port}{path}"


_REDIRECT_STATUS = {"MOVED_PERMANENTLY": 301, "FOUND": 302, "SEE_OTHER": 303,
                    "TEMPORARY_REDIRECT": 307, "PERMANENT_REDIRECT": 308}


def _route_policies(route: Json, origin: str) -> list[Policy]:
    out: list[Policy] = []
    action = route.get("route", {})
    if "timeout" in action:
        t = action["timeout"]
        out.append(Policy("timeout", "none" if t in ("0s", "0.000s") else str(t), origin))
    if "route" in route:
        retry = action.get("retry_policy")
        if retry:
            text = f"{retry.get('num_retries', 1)} on {retry.get('retry_on', '')}"
            if "per_try_timeout" in retry:
                text += f", {retry['per_try_timeout']} per try"
            if retry.get("retriable_status_codes"):
                text += f", status {retry['retriable_status_codes']}"
            out.append(Policy("retries", text, origin))
        else:
            out.append(Policy("retries", "none", origin))
    for m in action.get("request_mirror_policies", []):
        pct = fraction_percent(m.get("runtime_fraction", {}).get("default_value",
                                                                 {"numerator": 100}))
        out.append(Policy("mirror", f"{m.get('cluster')} ({pct:g}%)", origin))
    for key, words in (("prefix_rewrite", "path prefix rewritten to"),
                       ("host_rewrite_literal", "authority rewritten to")):
        if key in action:
            out.append(Policy("rewrite", f"{words} {action[key]!r}", origin))
    if "regex_rewrite" in action:
        rr = action["regex_rewrite"]
        out.append(Policy("rewrite", f"path {rr.get('pattern', {}).get('regex')!r} -> "
                                     f"{rr.get('substitution')!r}", origin))
    if action.get("hash_policy"):
        out.append(Policy("consistent hash", ", ".join(
            next(iter(h)) for h in action["hash_policy"]), origin))
    for key, words in (("request_headers_to_add", "request headers set/added"),
                       ("request_headers_to_remove", "request headers removed"),
                       ("response_headers_to_add", "response headers set/added"),
                       ("response_headers_to_remove", "response headers removed")):
        if route.get(key):
            items = [h["header"]["key"] if isinstance(h, dict) else str(h)
                     for h in route[key]]
            out.append(Policy("headers", f"{words}: {', '.join(items)}", origin))
    per_filter = route.get("typed_per_filter_config", {})
    fault = per_filter.get(FAULT)
    if fault:
        if "delay" in fault:
            d = fault["delay"]
            out.append(Policy("fault delay", f"{d.get('fixed_delay')} for "
                              f"{fraction_percent(d.get('percentage', {})):g}% of requests",
                              origin))
        if "abort" in fault:
            a = fault["abort"]
            code = a.get("http_status") or f"gRPC {a.get('grpc_status', 0)}"
            out.append(Policy("fault abort", f"{code} for "
                              f"{fraction_percent(a.get('percentage', {})):g}% of requests",
                              origin))
    cors = per_filter.get(CORS)
    if cors:
        origins = [next(iter(o.values())) for o in cors.get("allow_origin_string_match", [])]
        out.append(Policy("CORS", f"origins {origins}", origin))
    return out


def _fault_abort(route: Json) -> tuple[int, float] | None:
    abort = route.get("typed_per_filter_config", {}).get(FAULT, {}).get("abort")
    if not abort or "http_status" not in abort:
        return None
    return int(abort["http_status"]), fraction_percent(abort.get("percentage", {}))


def _weighted(dump: ConfigDump, clusters: list[Json], pods: dict[str, str]
              ) -> list[Destination]:
    total = sum(int(c.get("weight", 0)) for c in clusters) or 1
    return [_destination(dump, c.get("name", ""), int(c.get("weight", 0)),
                         int(c.get("weight", 0)) * 100 / total, pods) for c in clusters]


# -- the walk ---------------------------------------------------------------------------

def _pick_listener(dump: ConfigDump, req: Request, dest_ip: str
                   ) -> tuple[Json | None, str]:
    """The listener a connection to the port reaches: one bound to the destination IP,
    else one on 0.0.0.0/::, else (our sidecars bind the proxy's own address, where the
    application connects) the first on the port. The destination the filter chains see:
    the URL's IP as given (iptables-redirected traffic keeps it), else the listener's."""
    on_port = [ls for ls in dump.listeners if listener_address(ls)[1] == req.port]
    for ls in on_port:
        if listener_address(ls)[0] == dest_ip:
            return ls, dest_ip
    for ls in on_port:
        if listener_address(ls)[0] in ("0.0.0.0", "::"):
            return ls, dest_ip
    if on_port:
        return on_port[0], dest_ip or listener_address(on_port[0])[0]
    return None, dest_ip


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _network_filter(chain: Json, name: str, type_suffix: str) -> Json | None:
    for f in chain.get("filters", []):
        config = f.get("typed_config", {})
        if f.get("name") == name or str(config.get("@type", "")).endswith(type_suffix):
            return dict(config)
    return None


def explain(dump: ConfigDump, req: Request, pods: dict[str, str] | None = None,
            proxy: str = "") -> Explanation:
    pods = pods or {}
    out = Explanation(request={"url": f"{req.scheme}://{req.host}:{req.port}"
                               + (req.path if req.is_http else ""),
                               "method": req.method if req.is_http else "",
                               "authority": req.authority if req.is_http else "",
                               "headers": {k: v for k, v in req.headers.items()
                                           if not k.startswith(":")},
                               "sni": req.sni},
                      proxy=proxy)
    dest_ip = req.host if _is_ip(req.host) else ""
    listener, dest_ip = _pick_listener(dump, req, dest_ip)
    if listener is None:
        out.action, out.answer = "none", "connection refused: no listener on the port"
        out.verdict = f"no listener on port {req.port}: the connection is refused"
        return out
    out.listener = str(listener.get("name", ""))
    ip, port = listener_address(listener)
    out.listener_address = f"{ip}:{port}"
    if not _is_ip(req.host) and any(c.get("filter_chain_match", {}).get("prefix_ranges")
                                    for c in listener.get("filter_chains", [])):
        out.notes.append(f"{req.host!r} is a name: the connection is taken to arrive at the "
                         f"listener's own address {dest_ip} (give the service's IP for "
                         "iptables-redirected traffic)")
    transport = "tls" if req.scheme == "tls" else "raw_buffer"
    chain, why = select_filter_chain(listener, dest_ip, req.sni, transport)
    out.filter_chain = why
    if chain is None:
        out.action, out.answer = "none", "connection closed: no filter chain"
        out.verdict = why
        return out
    hcm = _network_filter(chain, HCM, ".HttpConnectionManager")
    if hcm is not None:
        if not req.is_http:
            out.notes.append("the chain is HTTP: a raw TCP client would be parsed as HTTP")
        return _explain_http(dump, req, hcm, out, pods)
    tcp = _network_filter(chain, TCP_PROXY, ".TcpProxy")
    if tcp is None:
        out.action, out.answer = "none", "no HTTP connection manager or tcp_proxy"
        out.verdict = "the chain has neither an HTTP connection manager nor a tcp_proxy"
        return out
    if req.is_http:
        out.notes.append("the port is TCP: the HTTP request is proxied as bytes")
    out.action = "tcp_proxy"
    chain_vs = config_object(chain)
    if chain_vs:
        out.virtual_service = chain_vs
        out.rule = str(_filter_metadata(chain).get(OURS, {}).get("rule", ""))
    if "weighted_clusters" in tcp:
        out.destinations = _weighted(dump, tcp["weighted_clusters"].get("clusters", []), pods)
    else:
        out.destinations = [_destination(dump, str(tcp.get("cluster", "")), None, 100.0,
                                         pods)]
    stat = str(tcp.get("stat_prefix", ""))
    if not chain_vs and stat and [d.cluster for d in out.destinations] != [stat]:
        out.notes.append(f"the port's service is {split_cluster_name(stat)[0] or stat}; a "
                         "VirtualService tcp route sends its connections elsewhere")
    _verdict_for_destinations(out)
    return out


def _verdict_for_destinations(out: Explanation) -> None:
    """Routed: to some service's cluster (the catch-all clusters are not one). A cluster
    the proxy lacks, or without a healthy endpoint, still took the routing decision, so
    it is a note (what the client gets) rather than "not routed"."""
    names = [d.cluster for d in out.destinations]
    out.routed = bool(names) and not set(names) <= {_PASSTHROUGH, _BLACKHOLE}
    parts = [f"{d.cluster} ({d.percent:g}%)" for d in out.destinations]
    out.verdict = "to " + ", ".join(parts) if parts else "nowhere"
    share = "" if len(out.destinations) == 1 else "requests sent there get "
    for d in out.destinations:
        if not d.known:
            out.notes.append(f"the proxy holds no cluster {d.cluster}: {share or 'Envoy answers '}"
                             "503")
        elif d.cluster in (_PASSTHROUGH, _BLACKHOLE):
            continue
        elif not d.endpoints:
            out.notes.append(f"{d.cluster} has no endpoints: {share or 'Envoy answers '}503")
        elif not any(e.health in ("HEALTHY", "UNKNOWN") for e in d.endpoints):
            out.notes.append(f"{d.cluster} has no healthy endpoint: "
                             f"{share or 'Envoy answers '}503")


def _explain_http(dump: ConfigDump, req: Request, hcm: Json, out: Explanation,
                  pods: dict[str, str]) -> Explanation:
    # The path as this connection manager hands it to routing: its own settings, so a
    # dump with other ones (merge_slashes, escaped-slash actions) is followed too.
    handling = PathHandling.from_hcm(hcm)
    handled = handle_path(handling, req.path)
    if handled.status is not None:
        out.action, out.status = "none", handled.status
        out.answer = (f"{handled.status} redirect to {handled.path}" if handled.status == 307
                      else f"{handled.status} (the connection manager refuses the path)")
        out.verdict = f"answered by the connection manager: {handled.why}"
        return out
    if handled.path != req.path:
        out.notes.append(f"the connection manager ({handling.describe()}) routes the path "
                         f"as {handled.path!r}")
        req = req.with_path(handled.path)
    if "rds" in hcm:
        name = str(hcm["rds"].get("route_config_name", ""))
        config = dump.route_configs.get(name)
        out.route_config = name
        if config is None:
            out.action, out.status = "none", 404
            out.answer = "404 (NR): the proxy holds no route configuration " + repr(name)
            out.verdict = out.answer
            return out
    else:
        config = hcm.get("route_config", {})
        out.route_config = str(config.get("name", "(inline)"))
    found = select_virtual_host(config.get("virtual_hosts", []), req.authority)
    if found is None:
        out.action, out.status = "none", 404
        out.answer = f"404 (NR): no virtual host takes {req.authority!r}"
        out.verdict = out.answer
        return out
    vhost, domain, how = found
    out.virtual_host, out.domain, out.domain_match = str(vhost.get("name", "")), domain, how
    chosen: Json | None = None
    for route in vhost.get("routes", []):
        reason = route_mismatch(route.get("match", {}), req)
        vs, rule, _ = _route_origin(route)
        if reason is None:
            chosen = route
            break
        out.skipped.append(Skipped(str(route.get("name", "")), reason, vs, rule))
    if chosen is None:
        out.action, out.status = "none", 404
        out.answer = f"404 (NR): no route of virtual host {out.virtual_host} matches"
        out.verdict = out.answer
        return out
    out.route = str(chosen.get("name", ""))
    out.match = match_conditions(chosen.get("match", {}))
    out.virtual_service, out.rule, out.delegate = _route_origin(chosen)
    origin = " ".join(x for x in (out.virtual_service and f"VirtualService "
                                  f"{out.virtual_service}", out.rule) if x)
    out.policies = _route_policies(chosen, origin)
    catch_all = out.virtual_host in ("allow_any", "block_all") and domain == "*"
    abort = _fault_abort(chosen)
    if abort is not None and abort[1] >= 100:
        out.action, out.status = "fault_abort", abort[0]
        out.answer = f"{abort[0]} (fault filter abort, every request)"
        out.routed = True
        out.verdict = f"answered by the proxy: {out.answer}"
        return out
    if abort is not None:
        out.notes.append(f"the fault filter answers {abort[0]} to {abort[1]:g}% of requests; "
                         "the rest go on as below")
    if "redirect" in chosen:
        r = chosen["redirect"]
        out.action = "redirect"
        out.status = _REDIRECT_STATUS.get(r.get("response_code", "MOVED_PERMANENTLY"), 301)
        out.answer = (f"{out.status} redirect to "
                      f"{_redirect_location(r, chosen.get('match', {}), req)}")
        out.routed = True
        out.verdict = f"answered by the proxy: {out.answer}"
        return out
    if "direct_response" in chosen:
        d = chosen["direct_response"]
        out.action, out.status = "direct_response", int(d.get("status", 0))
        body = d.get("body", {})
        text = body.get("inline_string")
        if text is None and "inline_bytes" in body:
            text = base64.b64decode(body["inline_bytes"]).decode("utf-8", "replace")
        out.answer = f"{out.status}" + (f" {text!r}" if text else "")
        out.routed = not catch_all
        out.verdict = (f"answered by the proxy: {out.answer}" if not catch_all else
                       f"no service takes {req.authority!r}: the catch-all virtual host "
                       f"({out.virtual_host}, REGISTRY_ONLY) answers {out.status}")
        return out
    action = chosen.get("route", {})
    out.action = "route"
    if "weighted_clusters" in action:
        out.destinations = _weighted(dump, action["weighted_clusters"].get("clusters", []),
                                     pods)
    elif "cluster" in action:
        out.destinations = [_destination(dump, str(action["cluster"]), None, 100.0, pods)]
    else:
        out.notes.append("the route names its cluster by a header or specifier explain "
                         "does not follow")
    _verdict_for_destinations(out)
    if catch_all:
        out.routed = False
        out.verdict = (f"no service takes {req.authority!r}: the catch-all virtual host "
                       f"({out.virtual_host}, ALLOW_ANY) sends it to "
                       f"{', '.join(d.cluster for d in out.destinations)}")
    return out
