"""Pieces shared by Istio's VirtualService and DestinationRule: string matches, hosts,
percentages, and the RE2 check that keeps Envoy from ever seeing a regex it rejects."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from controlplane.model.errors import Errors
from controlplane.model.fields import as_map, as_str, type_name
from controlplane.model.re2check import regex_error

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")
SUBSET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_DNS_LABEL = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$")
# A host's first label may be `*`, or a label led by `*` or `*-` (Istio's wildcard prefix).
_WILDCARD_LABEL = re.compile(r"^(?:\*|(?:\*|\*-)?[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?)$")
_ALL_DIGITS = re.compile(r"^[+-]?[0-9]+$")  # what Go's strconv.Atoi takes for a number
# Pseudo-headers a header match may name (HTTP/2's, RFC 7540 8.1.2.3 and 8.1.2.4).
PSEUDO_HEADERS = frozenset({":method", ":scheme", ":authority", ":path", ":status"})


@dataclass(frozen=True)
class StringMatch:
    kind: str  # "exact", "prefix" or "regex"
    value: str


def check_regex(value: str, path: str, errs: Errors) -> None:
    """Envoy's own test (RE2 compile and program-size limit), so a regex Envoy would
    reject is reported here, naming the field, instead of NACKed by every proxy."""
    if not value:
        # RegexMatcher.regex has min_len 1 in Envoy's protos.
        errs.add(path, "regex must not be empty")
        return
    if len(value) > 1024:
        # Istio's validateStringMatchRegexp: its stand-in for RE2's program size.
        errs.add(path, f"regex is too large ({len(value)} characters); at most 1024")
        return
    problem = regex_error(value)
    if problem is not None:
        errs.add(path, problem)


def parse_string_match(raw: Any, path: str, errs: Errors, *, empty_prefix_ok: bool = False
                       ) -> StringMatch | None:
    """A StringMatch. An empty prefix matches everything: Istio allows it for a URI only
    (Envoy's StringMatcher, used for every other match, refuses it)."""
    m = as_map(raw, path, errs)
    kinds = [k for k in ("exact", "prefix", "regex") if k in m]
    unknown = sorted(set(m) - {"exact", "prefix", "regex"}, key=str)
    if unknown:
        errs.add(f"{path}.{unknown[0]}", "unknown match type; use exact, prefix or regex")
        return None
    if len(kinds) != 1:
        errs.add(path, "needs exactly one of exact, prefix or regex")
        return None
    kind = kinds[0]
    value = as_str(m[kind], f"{path}.{kind}", errs)
    if kind == "regex":
        check_regex(value, f"{path}.regex", errs)
    elif kind == "prefix" and not value and not empty_prefix_ok:
        errs.add(f"{path}.prefix", "must not be empty (an empty prefix matches everything; "
                 "leave the match out)")
    return StringMatch(kind, value)


def is_dns_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS_LABEL.match(value))


def _labels_problem(domain: str) -> str:
    """Istio's DNS-1123 check of a dotted name: every label a DNS label (a trailing dot
    allowed), and the last not all digits (or it would read as an address)."""
    labels = domain.split(".")
    if _ALL_DIGITS.match(labels[-1]):
        return f"{domain!r} is not a valid host (its top-level label {labels[-1]!r} is " \
               "all digits)"
    for i, label in enumerate(labels):
        if i == len(labels) - 1 and label == "":
            return ""
        if not is_dns_label(label):
            return f"{domain!r} is not a valid host (label {label!r})"
    return ""


def _length_problem(domain: str) -> str:
    if len(domain) > 255:
        return "is longer than 255 characters"
    return "must not be empty" if not domain else ""


def fqdn_problem(domain: str) -> str:
    """Why `domain` is not a DNS name Istio accepts (no wildcard), or ""."""
    return _length_problem(domain) or _labels_problem(domain)


def wildcard_domain_problem(domain: str) -> str:
    """Why `domain` is not a host Istio accepts (DNS labels; the first may be a wildcard
    such as `*`, `*.example.com` or `*-foo.example.com`), or ""."""
    problem = _length_problem(domain)
    if problem:
        return problem
    first, dot, rest = domain.partition(".")
    if not (len(first) <= 63 and _WILDCARD_LABEL.match(first)):
        return f"{domain!r} is not a valid host (label {first!r})"
    return _labels_problem(rest) if dot else ""


def is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def check_host(host: str, path: str, errs: Errors) -> None:
    """A destination's host (Istio's validateDestination): a DNS name, its first label
    possibly a wildcard, but not `*` alone, which names no service."""
    if host == "*":
        errs.add(path, "'*' is not a destination; name a service")
        return
    problem = wildcard_domain_problem(host)
    if problem:
        errs.add(path, problem)


def hosts_overlap(a: str, b: str) -> bool:
    """Istio's host.Name.Matches: equal, or one wildcard covering the other (two
    wildcards overlap when one's suffix ends the other's)."""
    if a.startswith("*") and b.startswith("*"):
        shorter, longer = sorted((a[1:], b[1:]), key=len)
        return longer.endswith(shorter)
    if a.startswith("*"):
        return b.endswith(a[1:])
    if b.startswith("*"):
        return a.endswith(b[1:])
    return a == b


def check_gateway_names(raw: list[Any], path: str, errs: Errors, warnings: list[str]
                        ) -> tuple[str, ...]:
    """Gateway references: `mesh`, `<namespace>/<name>` (two DNS labels), or the legacy
    `<name>.<namespace>...` DNS name (accepted with a warning, as Istio does)."""
    names = []
    for i, name in enumerate(raw):
        gpath = f"{path}[{i}]"
        if not isinstance(name, str):
            errs.add(gpath, f"must be a string, got {type_name(name)}")
            continue
        names.append(name)
        namespace, slash, gateway = name.partition("/")
        if not slash:
            problem = fqdn_problem(name)
            if problem:
                errs.add(gpath, f"{name!r} is not a gateway reference; use mesh or "
                         "<namespace>/<name>")
            elif "." in name:
                parts = name.split(".")
                warnings.append(f"{gpath}: {name!r} is the legacy form; prefer "
                                f"{parts[1]}/{parts[0]}")
            continue
        if not namespace or not gateway:
            errs.add(gpath, "namespace and gateway name must not be empty")
            continue
        if not is_dns_label(namespace):
            errs.add(gpath, f"{namespace!r} is not a valid namespace (a DNS label)")
        if not is_dns_label(gateway):
            errs.add(gpath, f"{gateway!r} is not a valid gateway name (a DNS label)")
    return tuple(names)


def check_header_name(name: Any, path: str, errs: Errors) -> str:
    if not isinstance(name, str) or not _HEADER_NAME.match(name):
        errs.add(path, f"{name!r} is not a valid HTTP header name")
        return ""
    return name


def parse_percent(raw: Any, path: str, errs: Errors, default: float = 100.0) -> float:
    """Istio's `percentage: {value: 12.5}` (a double in [0, 100])."""
    if raw is None:
        return default
    value = as_map(raw, path, errs).get("value", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        errs.add(f"{path}.value", f"must be a number, got {type_name(value)}")
        return default
    if not 0 <= value <= 100:
        errs.add(f"{path}.value", f"must be between 0 and 100, got {value}")
        return default
    return float(value)
