"""From a Kubernetes-shaped dict to a VirtualService, or errors naming every bad field:
the spec, its HTTP and TCP routes, their matches and where they send traffic
(destinations, weights, mirrors). What a route does besides that is read by
`route_policy_parse.py`; its header operations by `header_ops_parse.py`; TLS routes by
`tls_route_parse.py`.

Validation follows Istio's own (pkg/config/validation) where Istio has it (hosts and
gateway references, non-negative relative weights, one action per route, rewrite or fault
not with redirect...) and adds what Envoy would otherwise reject (RE2 regexes, header
names, status ranges), so an object either passes whole, or is rejected
naming every bad field and never reaches a proxy. Fields that select by the *client*
proxy (sourceLabels, sourceNamespace, gateways in a match) are kept for the translator,
which gives proxies whose view differs route configurations of their own. A VirtualService
without hosts is a delegate: HTTP routes only, reached through a root route's `delegate`
(merged into the root by `delegate.py` when the Mesh is built).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import Any

from controlplane.model.errors import Errors
from controlplane.model.fields import (
    as_bool,
    as_int,
    as_istio_duration,
    as_labels,
    as_list,
    as_map,
    as_str,
    reject_unknown_fields,
)
from controlplane.model.header_ops_parse import parse_headers
from controlplane.model.istio_common import (
    PSEUDO_HEADERS,
    SUBSET_NAME,
    StringMatch,
    check_gateway_names,
    check_header_name,
    check_host,
    hosts_overlap,
    is_ip_address,
    parse_percent,
    parse_string_match,
    wildcard_domain_problem,
)
from controlplane.model.meta import parse_meta
from controlplane.model.route_policy_parse import (
    int_percent,
    parse_cors,
    parse_direct_response,
    parse_fault,
    parse_redirect,
    parse_retries,
    parse_rewrite,
)
from controlplane.model.tls_route_parse import parse_tls_route
from controlplane.model.virtual_service import (
    Delegate,
    Destination,
    HTTPMatch,
    HTTPRoute,
    Mirror,
    Rewrite,
    TCPRoute,
    VirtualService,
    WeightedDestination,
)
from controlplane.model.visibility import (
    check_labels,
    is_dns1123_label,
    parse_export_to,
)


def _named_matches(raw: Any, path: str, errs: Errors, *, null_ok: bool,
                   star_is_present: bool = False
                   ) -> tuple[tuple[str, StringMatch | None], ...]:
    """Header, query parameter or absent-header matches by name. `{}` means "present"
    (Istio's translation); `null` is refused unless `null_ok` (where it also means
    "present"); with `star_is_present` (withoutHeaders), so does `regex: "*"`."""
    out: list[tuple[str, StringMatch | None]] = []
    for name, m in sorted(as_map(raw, path, errs).items(), key=lambda kv: str(kv[0])):
        if not isinstance(name, str) or not name:
            errs.add(path, "names must be non-empty strings")
            continue
        if m is None and not null_ok:
            errs.add(f"{path}.{name}", "must be a match (use {} to require presence)")
            continue
        if star_is_present and m == {"regex": "*"}:
            # Istio: `regex: "*"` in withoutHeaders is not a regex but "present".
            out.append((name, None))
            continue
        out.append((name, parse_string_match(m, f"{path}.{name}", errs) if m else None))
    return tuple(out)


_JWT_CLAIM = "@request.auth.claims"


def _is_jwt_claim(name: str) -> bool:
    """Istio's routing on a JWT claim: `@request.auth.claims.a.b` or `...claims[a][b]`."""
    if not name.lower().startswith(_JWT_CLAIM):
        return False
    rest = name[len(_JWT_CLAIM):]
    return (rest.startswith(".") and len(rest) > 1) or (
        rest.startswith("[") and rest.endswith("]") and len(rest) > 2)


def _check_match_header(name: str, path: str, errs: Errors, gateway_bound: bool) -> None:
    """Istio: a header match names a header, an HTTP/2 pseudo-header or (for gateways
    only) a JWT claim."""
    if _is_jwt_claim(name):
        if not gateway_bound:
            errs.add(path, "routing on a JWT claim is only for VirtualServices bound to "
                     "gateways")
        return
    if name not in PSEUDO_HEADERS:
        check_header_name(name, path, errs)


_MATCH_FIELDS = {"name", "uri", "scheme", "method", "authority", "headers", "port",
                 "queryParams", "ignoreUriCase", "withoutHeaders", "sourceLabels",
                 "sourceNamespace", "gateways"}
# Accepted with a warning: not translated.
_MATCH_IGNORED = {"statPrefix"}


def _optional_match(m: dict[str, Any], key: str, path: str, errs: Errors
                    ) -> StringMatch | None:
    """The uri, method, authority or scheme match. `{}` (no match type) matches any, as in
    Istio's translation: these pseudo-headers are on every request."""
    if m.get(key) in (None, {}):
        return None
    return parse_string_match(m[key], f"{path}.{key}", errs, empty_prefix_ok=key == "uri")


def _parse_match(raw: Any, path: str, errs: Errors, warnings: list[str],
                 gateway_bound: bool) -> HTTPMatch:
    m = as_map(raw, path, errs)
    reject_unknown_fields(m, _MATCH_FIELDS | _MATCH_IGNORED, path, errs)
    for key in sorted(set(m) & _MATCH_IGNORED, key=str):
        warnings.append(f"{path}.{key}: not supported, the match ignores it")
    source_labels = as_labels(m.get("sourceLabels"), f"{path}.sourceLabels", errs)
    check_labels(source_labels, f"{path}.sourceLabels", errs)
    source_namespace = as_str(m.get("sourceNamespace"), f"{path}.sourceNamespace", errs)
    if source_namespace and not is_dns1123_label(source_namespace):
        errs.add(f"{path}.sourceNamespace", f"{source_namespace!r} is not a valid namespace")
    if "scheme" in m:
        _optional_match(m, "scheme", path, errs)
        warnings.append(f"{path}.scheme: not supported, the match ignores it")
    headers = _named_matches(m.get("headers"), f"{path}.headers", errs, null_ok=False)
    without = _named_matches(m.get("withoutHeaders"), f"{path}.withoutHeaders", errs,
                             null_ok=True, star_is_present=True)
    for key, named in (("headers", headers), ("withoutHeaders", without)):
        for name, _ in named:
            _check_match_header(name, f"{path}.{key}.{name}", errs, gateway_bound)
    port = as_int(m.get("port"), f"{path}.port", errs, lo=0, hi=65535)
    return HTTPMatch(
        uri=_optional_match(m, "uri", path, errs),
        headers=headers,
        without_headers=without,
        method=_optional_match(m, "method", path, errs),
        authority=_optional_match(m, "authority", path, errs),
        query_params=_named_matches(m.get("queryParams"), f"{path}.queryParams", errs,
                                    null_ok=True),
        ignore_uri_case=as_bool(m.get("ignoreUriCase"), f"{path}.ignoreUriCase", errs),
        port=port or None,  # 0 is the proto's "unset"
        name=as_str(m.get("name"), f"{path}.name", errs),
        source_labels=source_labels,
        source_namespace=source_namespace,
        gateways=check_gateway_names(as_list(m["gateways"], f"{path}.gateways", errs),
                                     f"{path}.gateways", errs, warnings)
        if "gateways" in m else (),
    )


def parse_destination(raw: Any, path: str, errs: Errors) -> Destination:
    if raw is None:
        errs.add(path, "is required")
        return Destination(host="")
    d = as_map(raw, path, errs)
    reject_unknown_fields(d, {"host", "subset", "port"}, path, errs)
    subset = as_str(d.get("subset"), f"{path}.subset", errs)
    if subset and not SUBSET_NAME.match(subset):
        errs.add(f"{path}.subset", f"{subset!r} is not a valid subset name")
    host = as_str(d.get("host"), f"{path}.host", errs, required=True)
    if host:
        check_host(host, f"{path}.host", errs)
    port = None
    if d.get("port") is not None:  # a port selector needs its number
        port = as_int(as_map(d["port"], f"{path}.port", errs).get("number"),
                      f"{path}.port.number", errs, lo=1, hi=65535, required=True)
    return Destination(host=host, subset=subset, port=port)


# Envoy adds a route's weights in a uint32 and refuses a sum that overflows it.
_MAX_TOTAL_WEIGHT = 2**32 - 1


def parse_weighted(raw: Any, path: str, errs: Errors, *, http: bool = True
                   ) -> tuple[WeightedDestination, ...]:
    """Destinations and their weights (and, for HTTP, their header operations). As in
    Istio, weights are relative (Envoy sends each destination its weight over their sum);
    a destination of weight 0 gets nothing, and with several destinations at least one
    weight must be above 0."""
    dests = []
    for i, d in enumerate(as_list(raw, path, errs)):
        dpath = f"{path}[{i}]"
        if d is None:
            errs.add(dpath, "must be a destination, not null")
            continue
        d = as_map(d, dpath, errs)
        reject_unknown_fields(d, {"destination", "weight", "headers"} if http
                              else {"destination", "weight"}, dpath, errs)
        weight = as_int(d.get("weight"), f"{dpath}.weight", errs, lo=0, hi=2**31 - 1)
        headers, authority = parse_headers(d.get("headers"), f"{dpath}.headers", errs)
        dests.append(WeightedDestination(
            destination=parse_destination(d.get("destination"), f"{dpath}.destination", errs),
            weight=weight if weight is not None else 0,
            headers=headers,
            authority=authority,
        ))
    if len(dests) == 1 and dests[0].weight == 0:
        dests[0] = replace(dests[0], weight=100)
    total = sum(d.weight for d in dests)
    if len(dests) > 1 and total == 0:
        errs.add(path, "weights are all 0; at least one destination needs a weight")
    elif total > _MAX_TOTAL_WEIGHT:
        errs.add(path, f"weights add up to {total}, more than Envoy can hold "
                 f"({_MAX_TOTAL_WEIGHT}); they are relative, so scale them down")
    return tuple(dests)


def _mirrors(r: dict[str, Any], path: str, errs: Errors, warnings: list[str]
             ) -> tuple[Mirror, ...]:
    if "mirror" in r and "mirrors" in r:
        errs.add(f"{path}.mirrors", "use either mirror or mirrors, not both")
        return ()
    # Checked whether or not there is a mirror, as Istio does.
    percent = parse_percent(r.get("mirrorPercentage"), f"{path}.mirrorPercentage", errs)
    if "mirrorPercent" in r:
        warnings.append(f"{path}.mirrorPercent: deprecated; use mirrorPercentage")
        legacy = int_percent(r["mirrorPercent"], f"{path}.mirrorPercent", errs)
        if "mirrorPercentage" not in r:
            percent = legacy
    if "mirror" in r:
        return (Mirror(parse_destination(r["mirror"], f"{path}.mirror", errs), percent),)
    out = []
    for i, m in enumerate(as_list(r.get("mirrors"), f"{path}.mirrors", errs)):
        mpath = f"{path}.mirrors[{i}]"
        if m is None:
            errs.add(mpath, "must be a mirror, not null")
            continue
        m = as_map(m, mpath, errs)
        reject_unknown_fields(m, {"destination", "percentage"}, mpath, errs)
        out.append(Mirror(parse_destination(m.get("destination"), f"{mpath}.destination",
                                            errs),
                          parse_percent(m.get("percentage"), f"{mpath}.percentage", errs)))
    return tuple(out)


_HTTP_ROUTE_FIELDS = {"name", "match", "route", "timeout", "retries", "fault", "mirror",
                      "mirrors", "mirrorPercentage", "mirrorPercent", "rewrite", "redirect",
                      "directResponse", "headers", "corsPolicy", "delegate"}


def _conflicts(r: dict[str, Any], has_route: bool, path: str, errs: Errors) -> None:
    """Istio's validateHTTPRouteConflict: a route forwards, redirects or answers directly,
    and what only a forwarded request can have (fault, rewrite) goes with forwarding."""
    for action in ("redirect", "directResponse"):
        if action not in r:
            continue
        others = ("route", "fault", "rewrite", "directResponse") if action == "redirect" \
            else ("route", "fault", "rewrite")
        for other in others:
            if (has_route if other == "route" else other in r):
                errs.add(f"{path}.{other}", f"cannot be used with {action}")
        return
    if not has_route:
        errs.add(path, "needs one of route, redirect or directResponse")


def _parse_delegate(raw: Any, path: str, errs: Errors) -> Delegate:
    d = as_map(raw, path, errs)
    reject_unknown_fields(d, {"name", "namespace"}, path, errs)
    name = as_str(d.get("name"), f"{path}.name", errs, required=True)
    namespace = as_str(d.get("namespace"), f"{path}.namespace", errs)
    return Delegate(name=name, namespace=namespace)


def _parse_http_route(raw: Any, path: str, errs: Errors, warnings: list[str],
                      gateway_bound: bool, in_delegate: bool = False) -> HTTPRoute | None:
    if raw is None:
        errs.add(path, "must be a route, not null")
        return None
    r = as_map(raw, path, errs)
    reject_unknown_fields(r, _HTTP_ROUTE_FIELDS, path, errs)
    delegate = None
    if "delegate" in r:
        if in_delegate:
            errs.add(f"{path}.delegate", "a delegate VirtualService (no hosts) cannot "
                     "delegate again")
        delegate = _parse_delegate(r["delegate"], f"{path}.delegate", errs)
        # Istio's rule: a root route hands the destination to its delegate's routes.
        for key in ("route", "redirect"):
            if key in r:
                errs.add(f"{path}.{key}", "cannot be used with delegate")
    dests = parse_weighted(r.get("route"), f"{path}.route", errs)
    if delegate is None:
        _conflicts(r, bool(dests), path, errs)
    matches = tuple(_parse_match(m, f"{path}.match[{i}]", errs, warnings, gateway_bound)
                    for i, m in enumerate(as_list(r.get("match"), f"{path}.match", errs)))
    timeout = as_istio_duration(r.get("timeout"), f"{path}.timeout", errs)
    headers, authority = parse_headers(r.get("headers"), f"{path}.headers", errs)
    rewrite = parse_rewrite(r["rewrite"], f"{path}.rewrite", errs) if "rewrite" in r else None
    if authority is not None:
        if rewrite is not None and rewrite.authority:
            errs.add(f"{path}.headers.request", "the authority is set here and in "
                     "rewrite.authority; set it once")
        elif dests:  # Istio's translation: the header set becomes the rewrite
            rewrite = replace(rewrite or Rewrite(), authority=authority)
    fault = parse_fault(r["fault"], f"{path}.fault", errs, warnings) if "fault" in r \
        else None
    return HTTPRoute(
        name=as_str(r.get("name"), f"{path}.name", errs),
        matches=matches,
        route=dests,
        timeout=timeout,
        retries=parse_retries(r["retries"], f"{path}.retries", errs, warnings)
        if "retries" in r else None,
        fault=fault,
        mirrors=_mirrors(r, path, errs, warnings),
        rewrite=rewrite,
        redirect=parse_redirect(r["redirect"], f"{path}.redirect", errs, matches)
        if "redirect" in r else None,
        direct_response=parse_direct_response(r["directResponse"], f"{path}.directResponse",
                                              errs, warnings)
        if "directResponse" in r else None,
        headers=headers,
        cors=parse_cors(r["corsPolicy"], f"{path}.corsPolicy", errs) if "corsPolicy" in r else None,
        delegate=delegate,
    )


def _check_subnet(value: Any, path: str, errs: Errors) -> None:
    """Istio's ValidateIPSubnet: an address, or an address/prefix-length."""
    if not isinstance(value, str):
        errs.add(path, f"must be a string, got {type(value).__name__}")
        return
    try:
        if "/" in value:
            ipaddress.ip_network(value, strict=False)
        else:
            ipaddress.ip_address(value)
    except ValueError:
        errs.add(path, f"{value!r} is not an IP address or subnet (CIDR)")


def _parse_tcp_route(raw: Any, path: str, errs: Errors, warnings: list[str]) -> TCPRoute:
    r = as_map(raw, path, errs)
    reject_unknown_fields(r, {"match", "route"}, path, errs)
    ports = []
    for i, m in enumerate(as_list(r.get("match"), f"{path}.match", errs)):
        mpath = f"{path}.match[{i}]"
        if m is None:
            errs.add(mpath, "must be a match, not null")
            continue
        m = as_map(m, mpath, errs)
        for key in sorted(set(m) - {"port"}, key=str):
            warnings.append(f"{mpath}.{key}: not supported, the match ignores it")
        for j, subnet in enumerate(as_list(m.get("destinationSubnets"),
                                           f"{mpath}.destinationSubnets", errs)):
            _check_subnet(subnet, f"{mpath}.destinationSubnets[{j}]", errs)
        if "gateways" in m:
            check_gateway_names(as_list(m["gateways"], f"{mpath}.gateways", errs),
                                f"{mpath}.gateways", errs, warnings)
        port = as_int(m.get("port"), f"{mpath}.port", errs, lo=0, hi=65535)
        if port:  # 0 is the proto's "unset"
            ports.append(port)
    dests = parse_weighted(r.get("route"), f"{path}.route", errs, http=False)
    if not dests:
        errs.add(f"{path}.route", "needs at least one destination")
    return TCPRoute(tuple(ports), dests)


def _tls_destinations(raw: Any, path: str, errs: Errors) -> tuple[WeightedDestination, ...]:
    return parse_weighted(raw, path, errs, http=False)


def _check_hosts(hosts: tuple[str, ...], gateways: tuple[str, ...], errs: Errors) -> None:
    """Istio's rules for a VirtualService's hosts: DNS names (the first label may be a
    wildcard) or IP addresses; `*` alone only when bound to gateways, not the mesh; and
    no two hosts overlapping (`*.foo.com` covers `a.foo.com`)."""
    applies_to_mesh = not gateways or "mesh" in gateways
    all_valid = True
    for i, host in enumerate(hosts):
        if not applies_to_mesh and host.startswith("outbound_."):
            # A gateway may route Istio's generated SNI names (outbound_.PORT_.SUBSET_.HOST),
            # which are not DNS names; Istio accepts them for gateway-bound hosts.
            continue
        problem = wildcard_domain_problem(host)
        if problem and not is_ip_address(host):
            errs.add(f"spec.hosts[{i}]", problem)
            all_valid = False
        elif applies_to_mesh and host == "*":
            errs.add(f"spec.hosts[{i}]", "'*' is only for VirtualServices bound to gateways, "
                     "not the mesh (name the services)")
            all_valid = False
    if not all_valid:
        return
    for i, a in enumerate(hosts):
        for j in range(i + 1, len(hosts)):
            if hosts_overlap(a, hosts[j]):
                errs.add(f"spec.hosts[{j}]", f"{hosts[j]!r} overlaps {a!r} "
                         f"(spec.hosts[{i}]); a host may appear once")


def parse_virtual_service(raw: dict[str, Any], errs: Errors) -> VirtualService:
    meta = parse_meta(raw, errs)
    spec = as_map(raw.get("spec"), "spec", errs)
    warnings: list[str] = []
    reject_unknown_fields(spec, {"hosts", "gateways", "http", "tcp", "tls", "exportTo"},
                          "spec", errs)
    hosts = tuple(as_str(h, f"spec.hosts[{i}]", errs)
                  for i, h in enumerate(as_list(spec.get("hosts"), "spec.hosts", errs)))
    in_delegate = not hosts  # Istio: no hosts makes it a delegate, reached via a root
    gateways = check_gateway_names(as_list(spec.get("gateways"), "spec.gateways", errs),
                                   "spec.gateways", errs, warnings)
    _check_hosts(hosts, gateways, errs)
    gateway_bound = bool(gateways) and "mesh" not in gateways
    raw_tls = as_list(spec.get("tls"), "spec.tls", errs)
    raw_http = as_list(spec.get("http"), "spec.http", errs)
    raw_tcp = as_list(spec.get("tcp"), "spec.tcp", errs)
    if in_delegate:
        for key in ("gateways", "tcp", "tls"):
            if spec.get(key):
                errs.add(f"spec.{key}", "a delegate VirtualService (no hosts) has HTTP "
                         f"routes only; {key} cannot be set")
        if not raw_http:
            errs.add("spec.hosts", "needs at least one host (or HTTP routes, for a "
                     "delegate VirtualService)")
    elif not raw_http and not raw_tcp and not raw_tls:
        errs.add("spec", "needs http, tcp or tls routes (without them the hosts would "
                 "answer nothing)")
    http = [_parse_http_route(r, f"spec.http[{i}]", errs, warnings, gateway_bound,
                              in_delegate)
            for i, r in enumerate(raw_http)]
    tcp = tuple(_parse_tcp_route(r, f"spec.tcp[{i}]", errs, warnings)
                for i, r in enumerate(raw_tcp))
    tls = tuple(parse_tls_route(r, f"spec.tls[{i}]", hosts, gateway_bound, errs, warnings,
                                _tls_destinations)
                for i, r in enumerate(raw_tls))
    return VirtualService(
        meta=meta,
        hosts=hosts,
        gateways=gateways,
        http=tuple(r for r in http if r is not None),
        tcp=tcp,
        tls=tls,
        warnings=tuple(warnings),
        export_to=parse_export_to(spec.get("exportTo"), meta.namespace, "spec.exportTo", errs),
    )

