"""From a Kubernetes-shaped dict to a VirtualService, or errors naming every bad field:
the spec, its HTTP and TCP routes, their matches and where they send traffic
(destinations, weights, mirrors). What a route does besides that is read by
`route_policy_parse.py`; its header operations by `header_ops_parse.py`.

Validation follows Istio's own where Istio has it (weights add up to 100, one action per
route, rewrite not with redirect...) and adds what Envoy would otherwise reject (RE2
regexes, header names, status ranges), so an object either passes whole, or is rejected
naming every bad field and never reaches a proxy. Fields that select by the *client*
proxy (sourceLabels, sourceNamespace, gateways in a match) are kept for the translator,
which gives proxies whose view differs route configurations of their own.
"""

from __future__ import annotations

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
    SUBSET_NAME,
    StringMatch,
    check_header_name,
    check_host,
    parse_percent,
    parse_string_match,
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
from controlplane.model.virtual_service import (
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
    check_gateway_names,
    check_labels,
    is_dns1123_label,
    parse_export_to,
)


def _named_matches(raw: Any, path: str, errs: Errors) -> tuple[tuple[str, StringMatch | None],
                                                               ...]:
    out = []
    for name, m in sorted(as_map(raw, path, errs).items(), key=lambda kv: str(kv[0])):
        if not isinstance(name, str) or not name:
            errs.add(path, "names must be non-empty strings")
            continue
        # Istio: an empty match object means "present".
        out.append((name, parse_string_match(m, f"{path}.{name}", errs) if m else None))
    return tuple(out)


_MATCH_FIELDS = {"name", "uri", "scheme", "method", "authority", "headers", "port",
                 "queryParams", "ignoreUriCase", "withoutHeaders", "sourceLabels",
                 "sourceNamespace", "gateways"}
# Accepted with a warning: not translated.
_MATCH_IGNORED = {"statPrefix"}


def _optional_match(m: dict[str, Any], key: str, path: str, errs: Errors
                    ) -> StringMatch | None:
    return parse_string_match(m[key], f"{path}.{key}", errs) if key in m else None


def _parse_match(raw: Any, path: str, errs: Errors, warnings: list[str]) -> HTTPMatch:
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
        warnings.append(f"{path}.scheme: not supported, the match ignores it")
    headers = _named_matches(m.get("headers"), f"{path}.headers", errs)
    for name, _ in headers:
        check_header_name(name, f"{path}.headers.{name}", errs)
    return HTTPMatch(
        uri=_optional_match(m, "uri", path, errs),
        headers=headers,
        without_headers=_named_matches(m.get("withoutHeaders"), f"{path}.withoutHeaders", errs),
        method=_optional_match(m, "method", path, errs),
        authority=_optional_match(m, "authority", path, errs),
        query_params=_named_matches(m.get("queryParams"), f"{path}.queryParams", errs),
        ignore_uri_case=as_bool(m.get("ignoreUriCase"), f"{path}.ignoreUriCase", errs),
        port=as_int(m.get("port"), f"{path}.port", errs, lo=1, hi=65535),
        source_labels=source_labels,
        source_namespace=source_namespace,
        gateways=check_gateway_names(m.get("gateways"), f"{path}.gateways", errs),
    )


def parse_destination(raw: Any, path: str, errs: Errors) -> Destination:
    d = as_map(raw, path, errs)
    port = as_map(d.get("port"), f"{path}.port", errs)
    subset = as_str(d.get("subset"), f"{path}.subset", errs)
    if subset and not SUBSET_NAME.match(subset):
        errs.add(f"{path}.subset", f"{subset!r} is not a valid subset name")
    host = as_str(d.get("host"), f"{path}.host", errs, required=True)
    if host:
        check_host(host, f"{path}.host", errs)
    return Destination(host=host, subset=subset,
                       port=as_int(port.get("number"), f"{path}.port.number", errs, lo=1,
                                   hi=65535))


def parse_weighted(raw: Any, path: str, errs: Errors) -> tuple[WeightedDestination, ...]:
    dests = []
    for i, d in enumerate(as_list(raw, path, errs)):
        dpath = f"{path}[{i}]"
        d = as_map(d, dpath, errs)
        reject_unknown_fields(d, {"destination", "weight", "headers"}, dpath, errs)
        weight = as_int(d.get("weight"), f"{dpath}.weight", errs, lo=0, hi=100)
        headers, authority = parse_headers(d.get("headers"), f"{dpath}.headers", errs)
        if authority is not None:
            # Istio rewrites the authority per destination; the translator has no
            # per-destination rewrite yet, and Envoy refuses the header operation.
            errs.add(f"{dpath}.headers.request", "setting the authority per destination is "
                     "not supported; use the route's rewrite.authority")
        dests.append(WeightedDestination(
            destination=parse_destination(d.get("destination"), f"{dpath}.destination", errs),
            weight=weight if weight is not None else 0,
            headers=headers,
        ))
    if len(dests) == 1 and dests[0].weight == 0:
        dests[0] = WeightedDestination(dests[0].destination, 100, dests[0].headers)
    if len(dests) > 1 and sum(d.weight for d in dests) != 100:
        errs.add(path, f"weights must add up to 100, got {sum(d.weight for d in dests)}")
    return tuple(dests)


def _mirrors(r: dict[str, Any], path: str, errs: Errors) -> tuple[Mirror, ...]:
    if "mirror" in r and "mirrors" in r:
        errs.add(f"{path}.mirrors", "use either mirror or mirrors, not both")
        return ()
    if "mirror" in r:
        if "mirrorPercentage" in r or "mirrorPercent" not in r:
            percent = parse_percent(r.get("mirrorPercentage"), f"{path}.mirrorPercentage",
                                    errs)
        else:
            percent = int_percent(r["mirrorPercent"], f"{path}.mirrorPercent", errs)
        return (Mirror(parse_destination(r["mirror"], f"{path}.mirror", errs), percent),)
    out = []
    for i, m in enumerate(as_list(r.get("mirrors"), f"{path}.mirrors", errs)):
        m = as_map(m, f"{path}.mirrors[{i}]", errs)
        out.append(Mirror(parse_destination(m.get("destination"),
                                            f"{path}.mirrors[{i}].destination", errs),
                          parse_percent(m.get("percentage"), f"{path}.mirrors[{i}].percentage",
                                        errs)))
    return tuple(out)


_HTTP_ROUTE_FIELDS = {"name", "match", "route", "timeout", "retries", "fault", "mirror",
                      "mirrors", "mirrorPercentage", "mirrorPercent", "rewrite", "redirect",
                      "directResponse", "headers", "corsPolicy", "delegate"}


def _parse_http_route(raw: Any, path: str, errs: Errors, warnings: list[str]
                      ) -> HTTPRoute | None:
    r = as_map(raw, path, errs)
    reject_unknown_fields(r, _HTTP_ROUTE_FIELDS, path, errs)
    if "delegate" in r:
        warnings.append(f"{path}.delegate: delegation is for gateways; this route is ignored")
        return None
    actions = [k for k in ("route", "redirect", "directResponse") if k in r]
    if len(actions) != 1:
        errs.add(path, "needs exactly one of route, redirect or directResponse"
                 + (f", got {', '.join(actions)}" if actions else ""))
    if "rewrite" in r and "redirect" in r:
        errs.add(f"{path}.rewrite", "cannot be used with redirect")
    dests = parse_weighted(r.get("route"), f"{path}.route", errs)
    if "route" in r and not dests:
        errs.add(f"{path}.route", "needs at least one destination")
    timeout = as_istio_duration(r.get("timeout"), f"{path}.timeout", errs)
    headers, authority = parse_headers(r.get("headers"), f"{path}.headers", errs)
    rewrite = parse_rewrite(r["rewrite"], f"{path}.rewrite", errs) if "rewrite" in r else None
    if authority is not None:
        if rewrite is not None and rewrite.authority:
            errs.add(f"{path}.headers.request", "the authority is set here and in "
                     "rewrite.authority; set it once")
        elif "route" in r:  # Istio's translation: the header set becomes the rewrite
            rewrite = replace(rewrite or Rewrite(), authority=authority)
    return HTTPRoute(
        name=as_str(r.get("name"), f"{path}.name", errs),
        matches=tuple(_parse_match(m, f"{path}.match[{i}]", errs, warnings)
                      for i, m in enumerate(as_list(r.get("match"), f"{path}.match", errs))),
        route=dests,
        timeout=timeout,
        retries=parse_retries(r["retries"], f"{path}.retries", errs) if "retries" in r else None,
        fault=parse_fault(r["fault"], f"{path}.fault", errs) if "fault" in r else None,
        mirrors=_mirrors(r, path, errs),
        rewrite=rewrite,
        redirect=parse_redirect(r["redirect"], f"{path}.redirect", errs) if "redirect" in r
        else None,
        direct_response=parse_direct_response(r["directResponse"], f"{path}.directResponse", errs)
        if "directResponse" in r else None,
        headers=headers,
        cors=parse_cors(r["corsPolicy"], f"{path}.corsPolicy", errs) if "corsPolicy" in r else None,
    )


def _parse_tcp_route(raw: Any, path: str, errs: Errors, warnings: list[str]) -> TCPRoute:
    r = as_map(raw, path, errs)
    reject_unknown_fields(r, {"match", "route"}, path, errs)
    ports = []
    for i, m in enumerate(as_list(r.get("match"), f"{path}.match", errs)):
        m = as_map(m, f"{path}.match[{i}]", errs)
        for key in sorted(set(m) - {"port"}, key=str):
            warnings.append(f"{path}.match[{i}].{key}: not supported, the match ignores it")
        port = as_int(m.get("port"), f"{path}.match[{i}].port", errs, lo=1, hi=65535)
        if port is not None:
            ports.append(port)
    dests = parse_weighted(r.get("route"), f"{path}.route", errs)
    if not dests:
        errs.add(f"{path}.route", "needs at least one destination")
    return TCPRoute(tuple(ports), dests)


def parse_virtual_service(raw: dict[str, Any], errs: Errors) -> VirtualService:
    meta = parse_meta(raw, errs)
    spec = as_map(raw.get("spec"), "spec", errs)
    warnings: list[str] = []
    reject_unknown_fields(spec, {"hosts", "gateways", "http", "tcp", "tls", "exportTo"},
                          "spec", errs)
    hosts = tuple(as_str(h, f"spec.hosts[{i}]", errs)
                  for i, h in enumerate(as_list(spec.get("hosts"), "spec.hosts", errs)))
    if not hosts:
        errs.add("spec.hosts", "needs at least one host")
    for i, h in enumerate(hosts):
        check_host(h, f"spec.hosts[{i}]", errs)
    if "tls" in spec:
        warnings.append("spec.tls: TLS routing is not supported; ignored")
    http = [_parse_http_route(r, f"spec.http[{i}]", errs, warnings)
            for i, r in enumerate(as_list(spec.get("http"), "spec.http", errs))]
    tcp = tuple(_parse_tcp_route(r, f"spec.tcp[{i}]", errs, warnings)
                for i, r in enumerate(as_list(spec.get("tcp"), "spec.tcp", errs)))
    return VirtualService(
        meta=meta,
        hosts=hosts,
        gateways=check_gateway_names(spec.get("gateways"), "spec.gateways", errs),
        http=tuple(r for r in http if r is not None),
        tcp=tcp,
        warnings=tuple(warnings),
        export_to=parse_export_to(spec.get("exportTo"), meta.namespace, "spec.exportTo", errs),
    )
