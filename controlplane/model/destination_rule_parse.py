"""From a Kubernetes-shaped dict to a DestinationRule, or errors naming every bad field:
subsets and traffic policies, checked as Istio checks them (durations in whole
milliseconds, prime Maglev table sizes, one hash key...). Fields this control plane does
not translate (locality, tunnels...) are accepted with a warning; client TLS is translated,
except ISTIO_MUTUAL, which is refused (it needs the mesh's own certificates).
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
    as_duration,
    as_int,
    as_istio_duration,
    as_labels,
    as_list,
    as_map,
    as_str,
    reject_unknown_fields,
)
from controlplane.model.istio_common import SUBSET_NAME, check_header_name, check_host
from controlplane.model.meta import parse_meta

# Istio's simple load balancers, by the Envoy policy each becomes.
SIMPLE_LB = {"UNSPECIFIED": "ROUND_ROBIN", "ROUND_ROBIN": "ROUND_ROBIN",
             "LEAST_REQUEST": "LEAST_REQUEST", "LEAST_CONN": "LEAST_REQUEST",
             "RANDOM": "RANDOM", "PASSTHROUGH": "PASSTHROUGH"}


def _load_balancer(raw: Any, path: str, errs: Errors, warnings: list[str]) -> LoadBalancer:
    lb = as_map(raw, path, errs)
    reject_unknown_fields(lb, {"simple", "consistentHash", "localityLbSetting",
                               "warmupDurationSecs", "warmup"}, path, errs)
    for key in ("localityLbSetting", "warmupDurationSecs", "warmup"):
        if key in lb:
            warnings.append(f"{path}.{key}: not supported; ignored")
    if "simple" in lb and "consistentHash" in lb:
        errs.add(path, "use either simple or consistentHash, not both")
    simple = as_str(lb.get("simple"), f"{path}.simple", errs) or "ROUND_ROBIN"
    if simple not in SIMPLE_LB:
        errs.add(f"{path}.simple", f"{simple!r} is not one of {', '.join(SIMPLE_LB)}")
    ch = None
    if "consistentHash" in lb:
        cpath = f"{path}.consistentHash"
        c = as_map(lb["consistentHash"], cpath, errs)
        reject_unknown_fields(c, {"httpHeaderName", "httpCookie", "useSourceIp",
                                  "httpQueryParameterName", "ringHash", "maglev",
                                  "minimumRingSize"}, cpath, errs)
        keys = [k for k in ("httpHeaderName", "httpCookie", "useSourceIp",
                            "httpQueryParameterName") if k in c]
        if len(keys) != 1:
            errs.add(cpath, "needs exactly one of httpHeaderName, httpCookie, useSourceIp or "
                     "httpQueryParameterName")
        cookie = as_map(c.get("httpCookie"), f"{cpath}.httpCookie", errs)
        if "httpCookie" in c and not cookie.get("name"):
            errs.add(f"{cpath}.httpCookie.name", "is required")
        header = as_str(c.get("httpHeaderName"), f"{cpath}.httpHeaderName", errs)
        if header:
            check_header_name(header, f"{cpath}.httpHeaderName", errs)
        if "ringHash" in c and "maglev" in c:
            errs.add(cpath, "use either ringHash or maglev, not both")
        ring = as_map(c.get("ringHash"), f"{cpath}.ringHash", errs)
        maglev = as_map(c.get("maglev"), f"{cpath}.maglev", errs)
        ring_size = as_int(ring.get("minimumRingSize", c.get("minimumRingSize")),
                           f"{cpath}.ringHash.minimumRingSize", errs, lo=1, hi=8388608)
        table = as_int(maglev.get("tableSize"), f"{cpath}.maglev.tableSize", errs, lo=1,
                       hi=5000010, required="maglev" in c)
        if table is not None and not _is_prime(table):
            # Istio's rule, and Envoy's: Maglev's table size must be prime.
            errs.add(f"{cpath}.maglev.tableSize", f"must be a prime number, got {table}")
            table = None
        ch = ConsistentHash(
            header=header.lower(),
            cookie=as_str(cookie.get("name"), f"{cpath}.httpCookie.name", errs),
            cookie_path=as_str(cookie.get("path"), f"{cpath}.httpCookie.path", errs),
            cookie_ttl=as_duration(cookie.get("ttl"), f"{cpath}.httpCookie.ttl", errs),
            source_ip=c.get("useSourceIp") is True,
            query_parameter=as_str(c.get("httpQueryParameterName"),
                                   f"{cpath}.httpQueryParameterName", errs),
            maglev="maglev" in c, minimum_ring_size=ring_size, table_size=table)
    return LoadBalancer(simple=SIMPLE_LB.get(simple, "ROUND_ROBIN"), consistent_hash=ch)


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


def _connection_pool(raw: Any, path: str, errs: Errors, warnings: list[str]
                     ) -> ConnectionPool:
    cp = as_map(raw, path, errs)
    reject_unknown_fields(cp, {"tcp", "http"}, path, errs)
    tcp = as_map(cp.get("tcp"), f"{path}.tcp", errs)
    reject_unknown_fields(tcp, {"maxConnections", "connectTimeout", "tcpKeepalive",
                                "maxConnectionDuration", "idleTimeout"}, f"{path}.tcp", errs)
    http = as_map(cp.get("http"), f"{path}.http", errs)
    reject_unknown_fields(http, {"http1MaxPendingRequests", "http2MaxRequests",
                                 "maxRequestsPerConnection", "maxRetries", "idleTimeout",
                                 "h2UpgradePolicy", "useClientProtocol", "maxConcurrentStreams"},
                          f"{path}.http", errs)
    for key in ("h2UpgradePolicy", "useClientProtocol", "maxConcurrentStreams"):
        if key in http:
            warnings.append(f"{path}.http.{key}: not supported; ignored")
    for key in ("maxConnectionDuration", "idleTimeout"):
        if key in tcp:
            warnings.append(f"{path}.tcp.{key}: not supported; ignored")
    keepalive = as_map(tcp.get("tcpKeepalive"), f"{path}.tcp.tcpKeepalive", errs)
    reject_unknown_fields(keepalive, {"time", "interval", "probes"}, f"{path}.tcp.tcpKeepalive",
                          errs)
    # Not translated (Envoy's defaults apply), but checked as Istio checks them.
    _positive_duration(keepalive.get("interval"), f"{path}.tcp.tcpKeepalive.interval", errs)
    as_int(keepalive.get("probes"), f"{path}.tcp.tcpKeepalive.probes", errs, lo=0,
           hi=2**32 - 1)
    big = 2**31 - 1
    return ConnectionPool(
        max_connections=as_int(tcp.get("maxConnections"), f"{path}.tcp.maxConnections", errs,
                               lo=1, hi=big),
        connect_timeout=_positive_duration(tcp.get("connectTimeout"),
                                           f"{path}.tcp.connectTimeout", errs),
        tcp_keepalive_time=_clamp(_positive_duration(keepalive.get("time"),
                                                     f"{path}.tcp.tcpKeepalive.time", errs),
                                  _MAX_KEEPALIVE_S),
        http1_max_pending_requests=as_int(http.get("http1MaxPendingRequests"),
                                          f"{path}.http.http1MaxPendingRequests", errs, lo=1,
                                          hi=big),
        http2_max_requests=as_int(http.get("http2MaxRequests"),
                                  f"{path}.http.http2MaxRequests", errs, lo=1, hi=big),
        max_requests_per_connection=as_int(http.get("maxRequestsPerConnection"),
                                           f"{path}.http.maxRequestsPerConnection", errs, lo=0,
                                           hi=big),
        max_retries=as_int(http.get("maxRetries"), f"{path}.http.maxRetries", errs, lo=0,
                           hi=big),
        idle_timeout=_positive_duration(http.get("idleTimeout"), f"{path}.http.idleTimeout",
                                        errs),
    )


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
    defaults = OutlierDetection()
    five = as_int(o.get("consecutive5xxErrors", o.get("consecutiveErrors")),
                  f"{path}.consecutive5xxErrors", errs, lo=0, hi=2**31 - 1)
    gateway = as_int(o.get("consecutiveGatewayErrors"), f"{path}.consecutiveGatewayErrors",
                     errs, lo=0, hi=2**31 - 1)
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


def parse_traffic_policy(raw: Any, path: str, errs: Errors, warnings: list[str],
                         *, port_level: bool = True) -> TrafficPolicy:
    tp = as_map(raw, path, errs)
    known = {"loadBalancer", "connectionPool", "outlierDetection", "tls", "portLevelSettings",
             "tunnel", "proxyProtocol", "retryBudget"}
    reject_unknown_fields(tp, known, path, errs)
    for key in ("tunnel", "proxyProtocol", "retryBudget"):
        if key in tp:
            warnings.append(f"{path}.{key}: not supported; ignored")
    ports = []
    if port_level:
        seen: set[int] = set()
        for i, p in enumerate(as_list(tp.get("portLevelSettings"),
                                      f"{path}.portLevelSettings", errs)):
            ppath = f"{path}.portLevelSettings[{i}]"
            p = as_map(p, ppath, errs)
            number = as_int(as_map(p.get("port"), f"{ppath}.port", errs).get("number"),
                            f"{ppath}.port.number", errs, lo=1, hi=65535, required=True)
            if number in seen:
                errs.add(f"{ppath}.port.number", f"port {number} has settings twice")
            seen.add(number or 0)
            inner = parse_traffic_policy({k: v for k, v in p.items() if k != "port"}, ppath,
                                         errs, warnings, port_level=False)
            ports.append(PortPolicy(number or 0, inner.load_balancer, inner.connection_pool,
                                    inner.outlier_detection, inner.tls))
    elif "portLevelSettings" in tp:
        errs.add(f"{path}.portLevelSettings", "cannot be nested")
    return TrafficPolicy(
        load_balancer=_load_balancer(tp["loadBalancer"], f"{path}.loadBalancer", errs,
                                     warnings) if "loadBalancer" in tp else None,
        connection_pool=_connection_pool(tp["connectionPool"], f"{path}.connectionPool", errs,
                                         warnings) if "connectionPool" in tp else None,
        outlier_detection=_outlier(tp["outlierDetection"], f"{path}.outlierDetection", errs,
                                   warnings) if "outlierDetection" in tp else None,
        tls=parse_client_tls(tp["tls"], f"{path}.tls", errs) if "tls" in tp else None,
        port_level=tuple(ports),
    )


def parse_destination_rule(raw: dict[str, Any], errs: Errors) -> DestinationRule:
    meta = parse_meta(raw, errs)
    spec = as_map(raw.get("spec"), "spec", errs)
    reject_unknown_fields(spec, {"host", "trafficPolicy", "subsets", "exportTo",
                                 "workloadSelector"}, "spec", errs)
    host = as_str(spec.get("host"), "spec.host", errs, required=True)
    if host:
        check_host(host, "spec.host", errs)
    warnings: list[str] = []
    if "workloadSelector" in spec:
        warnings.append("spec.workloadSelector: not supported; the rule applies to every "
                        "sidecar")
    subsets = []
    seen: set[str] = set()
    for i, s in enumerate(as_list(spec.get("subsets"), "spec.subsets", errs)):
        path = f"spec.subsets[{i}]"
        s = as_map(s, path, errs)
        reject_unknown_fields(s, {"name", "labels", "trafficPolicy"}, path, errs)
        name = as_str(s.get("name"), f"{path}.name", errs, required=True)
        if name and not SUBSET_NAME.match(name):
            errs.add(f"{path}.name", f"{name!r} is not a valid subset name (a DNS label)")
        if name in seen:
            errs.add(f"{path}.name", f"subset {name!r} is defined twice")
        seen.add(name)
        policy = (parse_traffic_policy(s["trafficPolicy"], f"{path}.trafficPolicy", errs,
                                       warnings) if "trafficPolicy" in s else None)
        subsets.append(Subset(name=name, labels=as_labels(s.get("labels"), f"{path}.labels",
                                                          errs), traffic_policy=policy))
    return DestinationRule(
        meta=meta, host=host, subsets=tuple(subsets),
        traffic_policy=parse_traffic_policy(spec.get("trafficPolicy"), "spec.trafficPolicy",
                                            errs, warnings),
        warnings=tuple(warnings))
