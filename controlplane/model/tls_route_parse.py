"""A VirtualService's `tls` routes: which TLS connections (by SNI, destination subnet,
port) go where, without terminating TLS.

Istio's rules (pkg/config/validation, validateTLSRoute), in our words: a route needs at
least one match and one destination; a match needs at least one SNI host, each a valid
domain name (a leading `*` label allowed) that falls within one of the VirtualService's
hosts (`login.example.com` within `*.example.com`, a wildcard within a wider one); an IP
address as SNI host is accepted with a warning, as Istio does. Destination subnets are IP
addresses or CIDR blocks, the port is 1..65535, source labels are Kubernetes labels,
gateway names are `namespace/name` or a domain name.

What selects by the client (`sourceLabels`, `sourceNamespace`) is accepted and ignored
with a warning: listeners here are shared by every sidecar. `gateways` is honoured: a
match naming gateways but not `mesh` never applies to a sidecar.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

from controlplane.model.errors import Errors
from controlplane.model.fields import (
    as_int,
    as_labels,
    as_list,
    as_map,
    as_str,
    reject_unknown_fields,
)
from controlplane.model.istio_common import check_gateway_names, is_ip_address
from controlplane.model.virtual_service import TLSMatch, TLSRoute, WeightedDestination
from controlplane.model.visibility import check_labels

_LABEL = r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_DNS_LABEL = re.compile(f"^{_LABEL}$")
# The first label of a host may be `*`, `*suffix`, `*-suffix` or a plain label.
_WILDCARD_LABEL = re.compile(rf"^(\*|(\*|\*-)?{_LABEL})$")
DestinationParser = Callable[[Any, str, Errors], tuple[WeightedDestination, ...]]
_MATCH_FIELDS = {"sniHosts", "destinationSubnets", "port", "sourceLabels", "gateways",
                 "sourceNamespace"}


def domain_problem(name: str, *, wildcard: bool) -> str | None:
    """Why `name` is not a domain name Istio accepts (None when it is): labels of
    letters, digits and inner dashes, at most 63 characters each and 255 in all, the
    last not all digits; with `wildcard`, the first label may start with `*`."""
    if not name:
        return "must not be empty"
    if len(name) > 255:
        return f"{name!r} is longer than 255 characters"
    first, dot, rest = name.partition(".")
    if wildcard and not (len(first) <= 63 and _WILDCARD_LABEL.match(first)):
        return f"{name!r} is not a valid domain name (label {first!r})"
    labels = rest.split(".") if wildcard else name.split(".")
    if wildcard and not dot:
        return None
    if labels[-1].isdigit():
        return f"{name!r} is not a valid domain name (the last label is all digits)"
    for i, label in enumerate(labels):
        if i == len(labels) - 1 and label == "":  # a trailing dot: `example.com.`
            break
        if not (len(label) <= 63 and _DNS_LABEL.match(label)):
            return f"{name!r} is not a valid domain name (label {label!r})"
    return None


def within(host: str, other: str) -> bool:
    """Istio's host.Name.SubsetOf: every name `host` covers, `other` covers too."""
    if host.startswith("*"):
        return other.startswith("*") and len(host) >= len(other) and \
            host[1:].endswith(other[1:])
    if other.startswith("*"):
        return host.endswith(other[1:])
    return host == other


def _sni_host(raw: Any, path: str, vs_hosts: tuple[str, ...], gateway_only: bool,
              errs: Errors, warnings: list[str]) -> str:
    name = as_str(raw, path, errs)
    if not name:
        if isinstance(raw, str):
            errs.add(path, "must not be empty")
        return ""
    # Istio lets a gateway-bound VirtualService name its auto-generated SNI
    # (outbound_.<port>_._.<host>); those never reach a sidecar.
    if not (gateway_only and name.startswith("outbound_")):
        problem = domain_problem(name, wildcard=True)
        if problem is not None:
            if is_ip_address(name):
                warnings.append(f"{path}: {name!r} is an IP address; the SNI spec forbids "
                                "them and most clients never send one")
                return name
            errs.add(path, problem)
            return ""
    if not any(within(name, h) for h in vs_hosts):
        errs.add(path, f"{name!r} is not within any of the VirtualService's hosts "
                       f"({', '.join(vs_hosts)})")
        return ""
    return name


def _subnet(raw: Any, path: str, errs: Errors) -> str:
    text = as_str(raw, path, errs)
    try:
        if text.count("/") == 1:
            return str(ipaddress.ip_network(text, strict=False))
        return str(ipaddress.ip_network(text))  # one address: /32 or /128
    except ValueError:
        if isinstance(raw, str):
            errs.add(path, f"{text!r} is not an IP address or CIDR block")
        return ""


def _parse_match(raw: Any, path: str, vs_hosts: tuple[str, ...], gateway_only: bool,
                 errs: Errors, warnings: list[str]) -> TLSMatch:
    m = as_map(raw, path, errs)
    if not isinstance(raw, dict):
        if raw is None:
            errs.add(path, "must not be empty")
        return TLSMatch(())
    reject_unknown_fields(m, _MATCH_FIELDS, path, errs)
    sni = as_list(m.get("sniHosts"), f"{path}.sniHosts", errs)
    if not sni:
        errs.add(f"{path}.sniHosts", "needs at least one SNI host (TLS is routed by SNI)")
    hosts = tuple(h for h in (_sni_host(s, f"{path}.sniHosts[{i}]", vs_hosts, gateway_only,
                                        errs, warnings) for i, s in enumerate(sni)) if h)
    subnets = tuple(s for s in (
        _subnet(d, f"{path}.destinationSubnets[{i}]", errs) for i, d in
        enumerate(as_list(m.get("destinationSubnets"), f"{path}.destinationSubnets", errs)))
        if s)
    check_labels(as_labels(m.get("sourceLabels"), f"{path}.sourceLabels", errs),
                 f"{path}.sourceLabels", errs)
    as_str(m.get("sourceNamespace"), f"{path}.sourceNamespace", errs)
    for key in ("sourceLabels", "sourceNamespace"):
        if m.get(key):
            warnings.append(f"{path}.{key}: selects by the client proxy; not supported, "
                            "the match ignores it")
    return TLSMatch(
        sni_hosts=tuple(dict.fromkeys(hosts)),
        destination_subnets=tuple(dict.fromkeys(subnets)),
        port=as_int(m.get("port"), f"{path}.port", errs, lo=1, hi=65535),
        gateways=check_gateway_names(as_list(m.get("gateways"), f"{path}.gateways", errs),
                                     f"{path}.gateways", errs, warnings),
    )


def parse_tls_route(raw: Any, path: str, vs_hosts: tuple[str, ...], gateway_only: bool,
                    errs: Errors, warnings: list[str], destinations: DestinationParser
                    ) -> TLSRoute:
    """`destinations` reads the weighted `route` list (virtual_service_parse's, passed
    in so that module can import this one)."""
    r = as_map(raw, path, errs)
    reject_unknown_fields(r, {"match", "route"}, path, errs)
    raw_matches = as_list(r.get("match"), f"{path}.match", errs)
    if not raw_matches:
        errs.add(f"{path}.match", "needs at least one match (TLS is routed by SNI)")
    matches = tuple(_parse_match(m, f"{path}.match[{i}]", vs_hosts, gateway_only, errs,
                                 warnings) for i, m in enumerate(raw_matches))
    dests = destinations(r.get("route"), f"{path}.route", errs)
    if not dests:
        errs.add(f"{path}.route", "needs at least one destination")
    return TLSRoute(matches, dests)
