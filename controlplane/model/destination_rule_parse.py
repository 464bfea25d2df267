"""From a Kubernetes-shaped dict to a DestinationRule, or errors naming every bad field:
subsets and traffic policies, checked as Istio checks them (durations in whole
milliseconds, prime Maglev table sizes, one hash key...). Fields this control plane does
not translate (tunnels...) are accepted with a warning; client TLS is translated,
except ISTIO_MUTUAL, which is refused (it needs the mesh's own certificates); the load
balancer's locality and warmup settings are read by `load_balancer_parse.py`.
"""

from __future__ import annotations

from typing import Any

from controlplane.model.client_tls_parse import parse_client_tls
from controlplane.model.destination_rule import (
    ConnectionPool,
    ConsistentHash,
    DestinationRule,
    LoadBalancer,
    OutlierDetection,
    PortPolicy,
    Subset,
    TrafficPolicy,
)
from controlplane.model.errors import Errors
from controlplane.model.fields import (
    as_bool,
    as_duration,
    as_int,
    as_istio_duration,
    as_labels,
    as_list,
    as_map,
    as_str,
    reject_unknown_fields,
)
from controlplane.model.istio_common import (
    SUBSET_NAME,
    check_header_name,
    fqdn_problem,
    is_ip_address,
    wildcard_domain_problem,
)
from controlplane.model.load_balancer_parse import parse_locality_lb, parse_warmup
from controlplane.model.meta import parse_meta
from controlplane.model.visibility import check_labels, parse_export_to

# Istio's simple load balancers, by the Envoy policy each becomes.
SIMPLE_LB = {"UNSPECIFIED": "ROUND_ROBIN", "ROUND_ROBIN": "ROUND_ROBIN",
             "LEAST_REQUEST": "LEAST_REQUEST", "LEAST_CONN": "LEAST_REQUEST",
             "RANDOM": "RANDOM", "PASSTHROUGH": "PASSTHROUGH"}


def _load_balancer(raw: Any, path: str, errs: Errors, warnings: list[str]) -> LoadBalancer:
    lb = as_map(raw, path, errs)
    reject_unknown_fields(lb, {"simple", "consistentHash", "localityLbSetting",
                               "zoneAwareLbSetting", "warmupDurationSecs", "warmup"}, path,
                          errs)
    if "zoneAwareLbSetting" in lb:
        warnings.append(f"{path}.zoneAwareLbSetting: not supported; ignored")
    if lb.get("localityLbSetting") is not None and lb.get("zoneAwareLbSetting") is not None:
        errs.add(f"{path}.zoneAwareLbSetting", "use either localityLbSetting or "
                 "zoneAwareLbSetting, not both")
    if "simple" in lb and "consistentHash" in lb:
        errs.add(path, "use either simple or consistentHash, not both")
    simple = as_str(lb.get("simple"), f"{path}.simple", errs) or "ROUND_ROBIN"
    if simple not in SIMPLE_LB:
        errs.add(f"{path}.simple", f"{simple!r} is not one of {', '.join(SIMPLE_LB)}")
    ch = _consistent_hash(lb["consistentHash"], f"{path}.consistentHash", errs, warnings) \
        if "consistentHash" in lb else None
    warmup = parse_warmup(lb, path, errs)
    if warmup is not None and ch is not None:
        warnings.append(f"{path}.warmup: slow start applies to ROUND_ROBIN and LEAST_REQUEST "
                        "only; ignored with consistentHash")
        warmup = None
    locality = (parse_locality_lb(lb["localityLbSetting"], f"{path}.localityLbSetting", errs)
                if "localityLbSetting" in lb else None)
    return LoadBalancer(simple=SIMPLE_LB.get(simple, "ROUND_ROBIN"), consistent_hash=ch,
                        locality=locality, warmup=warmup)


def _consistent_hash(raw: Any, cpath: str, errs: Errors, warnings: list[str]
                     ) -> ConsistentHash:
    c = as_map(raw, cpath, errs)
    reject_unknown_fields(c, {"httpHeaderName", "httpCookie", "useSourceIp",
                              "httpQueryParameterName", "ringHash", "maglev",
                              "minimumRingSize"}, cpath, errs)
    keys = [k for k in ("httpHeaderName", "httpCookie", "useSourceIp",
                        "httpQueryParameterName") if k in c]
    if len(keys) > 1:  # a oneof; none at all is allowed (Istio hashes on nothing)
        errs.add(cpath, f"use one of httpHeaderName, httpCookie, useSourceIp or "
                 f"httpQueryParameterName, got {', '.join(keys)}")
    cookie = as_map(c.get("httpCookie"), f"{cpath}.httpCookie", errs)
    reject_unknown_fields(cookie, {"name", "path", "ttl", "attributes"}, f"{cpath}.httpCookie",
                          errs)
    if "httpCookie" in c and not cookie.get("name"):
        errs.add(f"{cpath}.httpCookie.name", "is required")
    _cookie_attributes(cookie.get("attributes"), f"{cpath}.httpCookie.attributes", errs,
                       warnings)
    header = as_str(c.get("httpHeaderName"), f"{cpath}.httpHeaderName", errs)
    if header:
        check_header_name(header, f"{cpath}.httpHeaderName", errs)
    if "ringHash" in c and "maglev" in c:
        errs.add(cpath, "use either ringHash or maglev, not both")
    if c.get("minimumRingSize"):
        warnings.append(f"{cpath}.minimumRingSize: deprecated; use ringHash.minimumRingSize")
        if "ringHash" in c or "maglev" in c:
            errs.add(f"{cpath}.minimumRingSize", "cannot be used with ringHash or maglev")
    ring = as_map(c.get("ringHash"), f"{cpath}.ringHash", errs)
    maglev = as_map(c.get("maglev"), f"{cpath}.maglev", errs)
    ring_size = as_int(ring.get("minimumRingSize", c.get("minimumRingSize")),
                       f"{cpath}.ringHash.minimumRingSize", errs, lo=0, hi=8388608)
    table = as_int(maglev.get("tableSize"), f"{cpath}.maglev.tableSize", errs, lo=0,
                   hi=5000010, required="maglev" in c)
    if table == 0:
        errs.add(f"{cpath}.maglev.tableSize", "is required (a prime number)")
        table = None
    if table is not None and not _is_prime(table):
        # Istio's rule, and Envoy's: Maglev's table size must be prime.
        errs.add(f"{cpath}.maglev.tableSize", f"must be a prime number, got {table}")
        table = None
    return ConsistentHash(
        header=header.lower(),
        cookie=as_str(cookie.get("name"), f"{cpath}.httpCookie.name", errs),
        cookie_path=as_str(cookie.get("path"), f"{cpath}.httpCookie.path", errs),
        cookie_ttl=as_duration(cookie.get("ttl"), f"{cpath}.httpCookie.ttl", errs),
        source_ip=c.get("useSourceIp") is True,
        query_parameter=as_str(c.get("httpQueryParameterName"),
                               f"{cpath}.httpQueryParameterName", errs),
        maglev="maglev" in c, minimum_ring_size=ring_size or None, table_size=table)


def _cookie_attributes(raw: Any, path: str, errs: Errors, warnings: list[str]) -> None:
    """Istio: every attribute named, no name twice. Not translated yet."""
    attributes = as_list(raw, path, errs)
    seen: set[str] = set()
    for i, a in enumerate(attributes):
        name = as_str(as_map(a, f"{path}[{i}]", errs).get("name"), f"{path}[{i}].name", errs,
                      required=True)
        if name in seen:
            errs.add(f"{path}[{i}].name", f"attribute {name!r} appears twice")
        seen.add(name)
    if attributes:
        warnings.append(f"{path}: not supported; ignored")


def _is_prime(n: int) -> bool:
    """As Envoy (and Istio, which copies it) decide: 1, 2 and 3 count as prime."""
    if n < 4:
        return n > 0
    if n % 2 == 0:
        return False
    return all(n % f for f in range(3, int(n**0.5) + 1, 2))


# Envoy holds TCP keepalive times in a uint32 of seconds; Istio takes any duration (and
# truncates), so a longer one is served as the longest Envoy can hold.
_MAX_KEEPALIVE_S = 2**32 - 1


def _positive_duration(raw: Any, path: str, errs: Errors) -> float | None:
    """Istio's ValidateDuration: at least 1ms, in whole milliseconds."""
    return as_istio_duration(raw, path, errs)


def _count(raw: Any, path: str, errs: Errors) -> int | None:
    """A connection-pool limit: an int32, at least 0; 0 is the proto's "unset" (Envoy's
    default, as Istio leaves it)."""
    return as_int(raw, path, errs, lo=0, hi=2**31 - 1) or None


_H2_UPGRADE = ("DEFAULT", "DO_NOT_UPGRADE", "UPGRADE")


def _connection_pool(raw: Any, path: str, errs: Errors, warnings: list[str]
                     ) -> ConnectionPool:
    cp = as_map(raw, path, errs)
    reject_unknown_fields(cp, {"tcp", "http"}, path, errs)
    if cp.get("tcp") is None and cp.get("http") is None:
        errs.add(path, "needs tcp or http settings")
    tcp = as_map(cp.get("tcp"), f"{path}.tcp", errs)
    reject_unknown_fields(tcp, {"maxConnections", "connectTimeout", "tcpKeepalive",
                                "maxConnectionDuration", "idleTimeout"}, f"{path}.tcp", errs)
    http = as_map(cp.get("http"), f"{path}.http", errs)
    reject_unknown_fields(http, {"http1MaxPendingRequests", "http2MaxRequests",
                                 "maxRequestsPerConnection", "maxRetries", "idleTimeout",
                                 "h2UpgradePolicy", "useClientProtocol", "maxConcurrentStreams",
                                 "http2KeepAlive"},
                          f"{path}.http", errs)
    for key in ("h2UpgradePolicy", "useClientProtocol", "maxConcurrentStreams"):
        if key in http:
            warnings.append(f"{path}.http.{key}: not supported; ignored")
    upgrade = http.get("h2UpgradePolicy")
    if upgrade is not None and upgrade not in _H2_UPGRADE:
        errs.add(f"{path}.http.h2UpgradePolicy", f"must be one of {', '.join(_H2_UPGRADE)}")
    if upgrade == "UPGRADE" and as_bool(http.get("useClientProtocol"),
                                        f"{path}.http.useClientProtocol", errs):
        errs.add(f"{path}.http.useClientProtocol", "cannot be true when h2UpgradePolicy is "
                 "UPGRADE")
    _count(http.get("maxConcurrentStreams"), f"{path}.http.maxConcurrentStreams", errs)
    for key in ("maxConnectionDuration", "idleTimeout"):
        if key in tcp:
            warnings.append(f"{path}.tcp.{key}: not supported; ignored")
    _positive_duration(tcp.get("maxConnectionDuration"), f"{path}.tcp.maxConnectionDuration",
                       errs)
    if tcp.get("idleTimeout") not in ("0s", "0ms", "0"):  # 0 turns the timeout off
        _positive_duration(tcp.get("idleTimeout"), f"{path}.tcp.idleTimeout", errs)
    keepalive = as_map(tcp.get("tcpKeepalive"), f"{path}.tcp.tcpKeepalive", errs)
    reject_unknown_fields(keepalive, {"time", "interval", "probes"}, f"{path}.tcp.tcpKeepalive",
                          errs)
    # Not translated (Envoy's defaults apply), but checked as Istio checks them.
    _positive_duration(keepalive.get("interval"), f"{path}.tcp.tcpKeepalive.interval", errs)
    as_int(keepalive.get("probes"), f"{path}.tcp.tcpKeepalive.probes", errs, lo=0,
           hi=2**32 - 1)
    return ConnectionPool(
        max_connections=_count(tcp.get("maxConnections"), f"{path}.tcp.maxConnections", errs),
        connect_timeout=_positive_duration(tcp.get("connectTimeout"),
                                           f"{path}.tcp.connectTimeout", errs),
        tcp_keepalive_time=_clamp(_positive_duration(keepalive.get("time"),
                                                     f"{path}.tcp.tcpKeepalive.time", errs),
                                  _MAX_KEEPALIVE_S),
        http1_max_pending_requests=_count(http.get("http1MaxPendingRequests"),
                                          f"{path}.http.http1MaxPendingRequests", errs),
        http2_max_requests=_count(http.get("http2MaxRequests"),
                                  f"{path}.http.http2MaxRequests", errs),
        max_requests_per_connection=_count(http.get("maxRequestsPerConnection"),
                                           f"{path}.http.maxRequestsPerConnection", errs),
        max_retries=_count(http.get("maxRetries"), f"{path}.http.maxRetries", errs),
        idle_timeout=_positive_duration(http.get("idleTimeout"), f"{path}.http.idleTimeout",
                                        errs),
        http2_keepalive=_http2_keepalive(http.get("http2KeepAlive"),
                                         f"{path}.http.http2KeepAlive", errs),
    )


def _http2_keepalive(raw: Any, path: str, errs: Errors) -> tuple[float, float] | None:
    """HTTP/2 PINGs: Istio needs both the interval and the timeout."""
    if raw is None:
        return None
    k = as_map(raw, path, errs)
    reject_unknown_fields(k, {"interval", "timeout"}, path, errs)
    values = []
    for key in ("interval", "timeout"):
        if k.get(key) is None:
            errs.add(f"{path}.{key}", "is required")
        values.append(_positive_duration(k.get(key), f"{path}.{key}", errs))
    interval, timeout = values
    return None if interval is None or timeout is None else (interval, timeout)


def _outlier(raw: Any, path: str, errs: Errors, warnings: list[str]) -> OutlierDetection:
    o = as_map(raw, path, errs)
    reject_unknown_fields(o, {"consecutive5xxErrors", "consecutiveGatewayErrors",
                              "consecutiveErrors", "interval", "baseEjectionTime",
                              "maxEjectionPercent", "minHealthPercent",
                              "splitExternalLocalOriginErrors", "consecutiveLocalOriginFailures"},
                          path, errs)
    for key in ("splitExternalLocalOriginErrors", "consecutiveLocalOriginFailures"):
        if key in o:
            warnings.append(f"{path}.{key}: not supported; ignored")
    split = as_bool(o.get("splitExternalLocalOriginErrors"),
                    f"{path}.splitExternalLocalOriginErrors", errs)
    if as_int(o.get("consecutiveLocalOriginFailures"), f"{path}.consecutiveLocalOriginFailures",
              errs, lo=0, hi=2**32 - 1) and not split:
        errs.add(f"{path}.consecutiveLocalOriginFailures", "needs "
                 "splitExternalLocalOriginErrors: true")
    if as_int(o.get("consecutiveErrors"), f"{path}.consecutiveErrors", errs, lo=-(2**31),
              hi=2**31 - 1):
        # Istio warns and ignores it (not translated since consecutive5xxErrors came).
        warnings.append(f"{path}.consecutiveErrors: deprecated and ignored; use "
                        "consecutive5xxErrors or consecutiveGatewayErrors")
    defaults = OutlierDetection()
    five = as_int(o.get("consecutive5xxErrors"), f"{path}.consecutive5xxErrors", errs, lo=0,
                  hi=2**32 - 1)
    gateway = as_int(o.get("consecutiveGatewayErrors"), f"{path}.consecutiveGatewayErrors",
                     errs, lo=0, hi=2**32 - 1)
    return OutlierDetection(
        consecutive_5xx_errors=defaults.consecutive_5xx_errors if five is None else five,
        consecutive_gateway_errors=gateway or 0,
        interval=_positive_duration(o.get("interval"), f"{path}.interval", errs)
        or defaults.interval,
        base_ejection_time=_positive_duration(o.get("baseEjectionTime"),
                                              f"{path}.baseEjectionTime", errs)
        or defaults.base_ejection_time,
        max_ejection_percent=_or(as_int(o.get("maxEjectionPercent"),
                                        f"{path}.maxEjectionPercent", errs, lo=0, hi=100),
                                 defaults.max_ejection_percent),
        min_health_percent=as_int(o.get("minHealthPercent"), f"{path}.minHealthPercent", errs,
                                  lo=0, hi=100),
    )


def _clamp(value: float | None, hi: float) -> float | None:
    return None if value is None else min(value, hi)


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


_POLICY_PARTS = ("loadBalancer", "connectionPool", "outlierDetection", "tls",
                 "portLevelSettings", "tunnel", "proxyProtocol", "retryBudget")
# What a port-level setting may hold (Istio counts only these as "a field").
_PORT_PARTS = ("loadBalancer", "connectionPool", "outlierDetection", "tls")


def _tunnel(raw: Any, path: str, errs: Errors) -> None:
    """Checked as Istio checks it; not translated (a warning says so)."""
    t = as_map(raw, path, errs)
    reject_unknown_fields(t, {"protocol", "targetHost", "targetPort"}, path, errs)
    protocol = as_str(t.get("protocol"), f"{path}.protocol", errs)
    if protocol not in ("", "CONNECT", "POST"):
        errs.add(f"{path}.protocol", f"must be CONNECT or POST, got {protocol!r}")
    host = as_str(t.get("targetHost"), f"{path}.targetHost", errs)
    if fqdn_problem(host) and not is_ip_address(host):
        errs.add(f"{path}.targetHost", f"{host!r} is neither a DNS name nor an IP address")
    as_int(t.get("targetPort"), f"{path}.targetPort", errs, lo=1, hi=65535, required=True)


def parse_traffic_policy(raw: Any, path: str, errs: Errors, warnings: list[str],
                         *, port_level: bool = True) -> TrafficPolicy:
    tp = as_map(raw, path, errs)
    reject_unknown_fields(tp, set(_POLICY_PARTS), path, errs)
    # A repeated field left empty is unset, as in the proto; an empty message is set.
    if raw is not None and not any(tp.get(k) not in (None, []) for k in _POLICY_PARTS):
        errs.add(path, "is empty; set at least one of its fields, or leave it out")
    for key in ("tunnel", "proxyProtocol", "retryBudget"):
        if key in tp:
            warnings.append(f"{path}.{key}: not supported; ignored")
    if tp.get("tunnel") is not None and tp.get("proxyProtocol") is not None:
        errs.add(f"{path}.proxyProtocol", "cannot be used with tunnel")
    if tp.get("tunnel") is not None:
        _tunnel(tp["tunnel"], f"{path}.tunnel", errs)
    if tp.get("proxyProtocol") is not None:
        version = as_map(tp["proxyProtocol"], f"{path}.proxyProtocol", errs).get("version")
        if version not in (None, "V1", "V2"):
            errs.add(f"{path}.proxyProtocol.version", f"must be V1 or V2, got {version!r}")
    ports = []
    if port_level:
        seen: set[int] = set()
        for i, p in enumerate(as_list(tp.get("portLevelSettings"),
                                      f"{path}.portLevelSettings", errs)):
            ppath = f"{path}.portLevelSettings[{i}]"
            if p is None:
                errs.add(ppath, "must be a port's settings, not null")
                continue
            p = as_map(p, ppath, errs)
            reject_unknown_fields(p, {"port", *_PORT_PARTS}, ppath, errs)
            number = as_int(as_map(p.get("port"), f"{ppath}.port", errs).get("number"),
                            f"{ppath}.port.number", errs, lo=1, hi=65535, required=True)
            if not any(p.get(k) is not None for k in _PORT_PARTS):
                errs.add(ppath, f"needs at least one of {', '.join(_PORT_PARTS)}")
                continue
            if number in seen:
                # Istio accepts this and uses the first; say so.
                warnings.append(f"{ppath}.port.number: port {number} has settings earlier; "
                                "these are ignored")
            seen.add(number or 0)
            inner = parse_traffic_policy({k: v for k, v in p.items() if k != "port"}, ppath,
                                         errs, warnings, port_level=False)
            ports.append(PortPolicy(number or 0, inner.load_balancer, inner.connection_pool,
                                    inner.outlier_detection, inner.tls))
    elif "portLevelSettings" in tp:
        errs.add(f"{path}.portLevelSettings", "cannot be nested")
    load_balancer = (_load_balancer(tp["loadBalancer"], f"{path}.loadBalancer", errs, warnings)
                     if tp.get("loadBalancer") is not None else None)
    locality = load_balancer.locality if load_balancer else None
    if locality and (locality.failover or locality.failover_priority) \
            and "outlierDetection" not in tp:
        # Istio warns too: Envoy moves to a lower priority only once outlier detection
        # has ejected the endpoints of the higher one.
        warnings.append(f"{path}.loadBalancer.localityLbSetting: failover needs "
                        "outlierDetection; without it traffic never fails over")
    return TrafficPolicy(
        load_balancer=load_balancer,
        connection_pool=_connection_pool(tp["connectionPool"], f"{path}.connectionPool", errs,
                                         warnings)
        if tp.get("connectionPool") is not None else None,
        outlier_detection=_outlier(tp["outlierDetection"], f"{path}.outlierDetection", errs,
                                   warnings) if tp.get("outlierDetection") is not None else None,
        tls=parse_client_tls(tp["tls"], f"{path}.tls", errs)
        if tp.get("tls") is not None else None,
        port_level=tuple(ports),
    )


def parse_destination_rule(raw: dict[str, Any], errs: Errors) -> DestinationRule:
    meta = parse_meta(raw, errs)
    spec = as_map(raw.get("spec"), "spec", errs)
    reject_unknown_fields(spec, {"host", "trafficPolicy", "subsets", "exportTo",
                                 "workloadSelector"}, "spec", errs)
    host = as_str(spec.get("host"), "spec.host", errs, required=True)
    warnings: list[str] = []
    if host:
        problem = wildcard_domain_problem(host)
        if problem:
            errs.add("spec.host", problem)
        elif host.startswith("*"):
            warnings.append(f"spec.host: wildcard hosts are not matched to services yet; "
                            f"{host!r} applies to none")
    if "workloadSelector" in spec:
        warnings.append("spec.workloadSelector: not supported; the rule applies to every "
                        "sidecar")
    export_to = parse_export_to(spec.get("exportTo"), meta.namespace, "spec.exportTo", errs)
    if export_to and export_to != ("*",):
        # Clusters are one set shared by every proxy: a rule cannot differ by namespace.
        warnings.append("spec.exportTo: not scoped; clusters are shared by every proxy, so "
                        "the rule applies in every namespace")
    subsets = []
    seen: set[str] = set()
    for i, s in enumerate(as_list(spec.get("subsets"), "spec.subsets", errs)):
        path = f"spec.subsets[{i}]"
        if s is None:
            errs.add(path, "must be a subset, not null")
            continue
        s = as_map(s, path, errs)
        reject_unknown_fields(s, {"name", "labels", "trafficPolicy"}, path, errs)
        name = as_str(s.get("name"), f"{path}.name", errs, required=True)
        if name and not SUBSET_NAME.match(name):
            errs.add(f"{path}.name", f"{name!r} is not a valid subset name (a DNS label)")
        if name in seen:
            errs.add(f"{path}.name", f"subset {name!r} is defined twice")
        seen.add(name)
        check_labels(as_labels(s.get("labels"), f"{path}.labels", errs), f"{path}.labels",
                     errs)
        policy = (parse_traffic_policy(s["trafficPolicy"], f"{path}.trafficPolicy", errs,
                                       warnings) if s.get("trafficPolicy") is not None
                  else None)
        subsets.append(Subset(name=name, labels=as_labels(s.get("labels"), f"{path}.labels",
                                                          errs), traffic_policy=policy))
    return DestinationRule(
        meta=meta, host=host, subsets=tuple(subsets),
        traffic_policy=parse_traffic_policy(spec.get("trafficPolicy"), "spec.trafficPolicy",
                                            errs, warnings),
        warnings=tuple(warnings), export_to=export_to)
