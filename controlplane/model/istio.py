"""Istio's VirtualService and DestinationRule (networking.istio.io v1, v1beta1, v1alpha3).

Only what is parsed here reaches the translator. A field the project does not implement
yet is accepted with a warning naming it, so existing YAML keeps working and nobody is
told a feature is on when it is not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from controlplane.model.errors import Errors
from controlplane.model.fields import (
    as_bool,
    as_duration,
    as_int,
    as_labels,
    as_list,
    as_map,
    as_str,
)
from controlplane.model.meta import Meta, parse_meta

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
_SUBSET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Constructs Python's re accepts but RE2 (Envoy's engine) rejects: Envoy would NACK them.
_NOT_RE2 = re.compile(r"\(\?[=!<]|\(\?P=|\\[1-9]|\(\?>|[*+?}]\+")


@dataclass(frozen=True)
class StringMatch:
    kind: str  # "exact", "prefix" or "regex"
    value: str


@dataclass(frozen=True)
class HTTPMatch:
    uri: StringMatch | None = None
    headers: tuple[tuple[str, StringMatch | None], ...] = ()  # None: header must be present
    method: StringMatch | None = None
    authority: StringMatch | None = None
    query_params: tuple[tuple[str, StringMatch | None], ...] = ()
    ignore_uri_case: bool = False
    port: int | None = None


@dataclass(frozen=True)
class Destination:
    host: str
    subset: str = ""
    port: int | None = None


@dataclass(frozen=True)
class WeightedDestination:
    destination: Destination
    weight: int


@dataclass(frozen=True)
class HTTPRoute:
    name: str
    matches: tuple[HTTPMatch, ...]  # empty: matches everything
    route: tuple[WeightedDestination, ...]
    timeout: float | None = None  # seconds; None: no timeout, as in Istio


@dataclass(frozen=True)
class VirtualService:
    meta: Meta
    hosts: tuple[str, ...]
    gateways: tuple[str, ...]
    http: tuple[HTTPRoute, ...]
    warnings: tuple[str, ...] = ()

    @property
    def applies_to_sidecars(self) -> bool:
        return not self.gateways or "mesh" in self.gateways


@dataclass(frozen=True)
class Subset:
    name: str
    labels: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class DestinationRule:
    meta: Meta
    host: str
    subsets: tuple[Subset, ...]
    warnings: tuple[str, ...] = ()

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)


def _check_regex(value: str, path: str, errs: Errors) -> None:
    if _NOT_RE2.search(value):
        errs.add(path, f"regex {value!r} uses a construct RE2 does not support "
                 "(lookaround, backreference, possessive or atomic group)")
        return
    try:
        re.compile(value)
    except re.error as exc:
        errs.add(path, f"invalid regex {value!r}: {exc}")


def parse_string_match(raw: Any, path: str, errs: Errors) -> StringMatch | None:
    m = as_map(raw, path, errs)
    kinds = [k for k in ("exact", "prefix", "regex") if k in m]
    unknown = sorted(set(m) - {"exact", "prefix", "regex"})
    if unknown:
        errs.add(f"{path}.{unknown[0]}", "unknown match type; use exact, prefix or regex")
        return None
    if len(kinds) != 1:
        errs.add(path, "needs exactly one of exact, prefix or regex")
        return None
    kind = kinds[0]
    value = as_str(m[kind], f"{path}.{kind}", errs)
    if kind == "regex":
        _check_regex(value, f"{path}.regex", errs)
    return StringMatch(kind, value)


def _named_matches(raw: Any, path: str, errs: Errors) -> tuple[tuple[str, StringMatch | None], ...]:
    out = []
    for name, m in sorted(as_map(raw, path, errs).items()):
        if not isinstance(name, str) or not name:
            errs.add(path, "names must be non-empty strings")
            continue
        # Istio: an empty match object means "present".
        out.append((name, parse_string_match(m, f"{path}.{name}", errs) if m else None))
    return tuple(out)


def _parse_match(raw: Any, path: str, errs: Errors) -> HTTPMatch:
    m = as_map(raw, path, errs)
    return HTTPMatch(
        uri=parse_string_match(m["uri"], f"{path}.uri", errs) if "uri" in m else None,
        headers=_named_matches(m.get("headers"), f"{path}.headers", errs),
        method=parse_string_match(m["method"], f"{path}.method", errs) if "method" in m
        else None,
        authority=parse_string_match(m["authority"], f"{path}.authority", errs)
        if "authority" in m else None,
        query_params=_named_matches(m.get("queryParams"), f"{path}.queryParams", errs),
        ignore_uri_case=as_bool(m.get("ignoreUriCase"), f"{path}.ignoreUriCase", errs),
        port=as_int(m.get("port"), f"{path}.port", errs, lo=1, hi=65535),
    )


def _parse_destination(raw: Any, path: str, errs: Errors) -> Destination:
    d = as_map(raw, path, errs)
    port = as_map(d.get("port"), f"{path}.port", errs)
    subset = as_str(d.get("subset"), f"{path}.subset", errs)
    if subset and not _SUBSET_NAME.match(subset):
        errs.add(f"{path}.subset", f"{subset!r} is not a valid subset name")
    return Destination(
        host=as_str(d.get("host"), f"{path}.host", errs, required=True),
        subset=subset,
        port=as_int(port.get("number"), f"{path}.port.number", errs, lo=1, hi=65535),
    )


_HTTP_ROUTE_FIELDS = {"name", "match", "route", "timeout"}
_HTTP_ROUTE_LATER = {
    "redirect", "directResponse", "delegate", "rewrite", "retries", "fault", "mirror",
    "mirrors", "mirrorPercentage", "mirrorPercent", "corsPolicy", "headers",
}


def _parse_http_route(raw: Any, path: str, errs: Errors, warnings: list[str]) -> HTTPRoute:
    r = as_map(raw, path, errs)
    for key in sorted(set(r) - _HTTP_ROUTE_FIELDS):
        if key in _HTTP_ROUTE_LATER:
            warnings.append(f"{path}.{key}: not implemented yet, ignored")
        else:
            errs.add(f"{path}.{key}", "unknown field")
    matches = tuple(
        _parse_match(m, f"{path}.match[{i}]", errs)
        for i, m in enumerate(as_list(r.get("match"), f"{path}.match", errs))
    )
    dests = []
    for i, d in enumerate(as_list(r.get("route"), f"{path}.route", errs)):
        dpath = f"{path}.route[{i}]"
        d = as_map(d, dpath, errs)
        weight = as_int(d.get("weight"), f"{dpath}.weight", errs, lo=0, hi=100)
        dests.append(WeightedDestination(
            destination=_parse_destination(d.get("destination"), f"{dpath}.destination", errs),
            weight=weight if weight is not None else 0,
        ))
    if not dests and not set(r) & {"redirect", "directResponse", "delegate"}:
        errs.add(f"{path}.route", "needs at least one destination")
    if len(dests) == 1 and dests[0].weight == 0:
        dests[0] = WeightedDestination(dests[0].destination, 100)
    if len(dests) > 1 and sum(d.weight for d in dests) != 100:
        errs.add(f"{path}.route", "weights must add up to 100, got "
                 f"{sum(d.weight for d in dests)}")
    timeout = as_duration(r.get("timeout"), f"{path}.timeout", errs)
    return HTTPRoute(
        name=as_str(r.get("name"), f"{path}.name", errs),
        matches=matches,
        route=tuple(dests),
        timeout=timeout,
    )


def _check_host(host: str, path: str, errs: Errors) -> None:
    if not host:
        errs.add(path, "must not be empty")
    elif host == "*" or "/" in host or " " in host:
        errs.add(path, f"{host!r} is not a valid host for a sidecar route")


def parse_virtual_service(raw: dict[str, Any], errs: Errors) -> VirtualService:
    meta = parse_meta(raw, errs)
    spec = as_map(raw.get("spec"), "spec", errs)
    warnings: list[str] = []
    hosts = tuple(as_str(h, f"spec.hosts[{i}]", errs)
                  for i, h in enumerate(as_list(spec.get("hosts"), "spec.hosts", errs)))
    if not hosts:
        errs.add("spec.hosts", "needs at least one host")
    for i, h in enumerate(hosts):
        _check_host(h, f"spec.hosts[{i}]", errs)
    for key in ("tcp", "tls"):
        if key in spec:
            warnings.append(f"spec.{key}: not implemented yet, ignored")
    http = tuple(
        _parse_http_route(r, f"spec.http[{i}]", errs, warnings)
        for i, r in enumerate(as_list(spec.get("http"), "spec.http", errs))
    )
    return VirtualService(
        meta=meta,
        hosts=hosts,
        gateways=tuple(str(g) for g in as_list(spec.get("gateways"), "spec.gateways", errs)),
        http=http,
        warnings=tuple(warnings),
    )


def parse_destination_rule(raw: dict[str, Any], errs: Errors) -> DestinationRule:
    meta = parse_meta(raw, errs)
    spec = as_map(raw.get("spec"), "spec", errs)
    host = as_str(spec.get("host"), "spec.host", errs, required=True)
    if host:
        _check_host(host, "spec.host", errs)
    warnings: list[str] = []
    if "trafficPolicy" in spec:
        warnings.append("spec.trafficPolicy: not implemented yet, ignored")
    subsets = []
    seen: set[str] = set()
    for i, s in enumerate(as_list(spec.get("subsets"), "spec.subsets", errs)):
        path = f"spec.subsets[{i}]"
        s = as_map(s, path, errs)
        name = as_str(s.get("name"), f"{path}.name", errs, required=True)
        if name and not _SUBSET_NAME.match(name):
            errs.add(f"{path}.name", f"{name!r} is not a valid subset name (a DNS label)")
        if name in seen:
            errs.add(f"{path}.name", f"subset {name!r} is defined twice")
        seen.add(name)
        if "trafficPolicy" in s:
            warnings.append(f"{path}.trafficPolicy: not implemented yet, ignored")
        subsets.append(Subset(name=name, labels=as_labels(s.get("labels"), f"{path}.labels",
                                                          errs)))
    return DestinationRule(meta=meta, host=host, subsets=tuple(subsets),
                           warnings=tuple(warnings))
