"""Pieces shared by Istio's VirtualService and DestinationRule: string matches, hosts,
percentages, and the RE2 check that keeps Envoy from ever seeing a regex it rejects."""

from __future__ import annotations

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


def parse_string_match(raw: Any, path: str, errs: Errors) -> StringMatch | None:
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
    return StringMatch(kind, value)


def check_host(host: str, path: str, errs: Errors) -> None:
    if not host:
        errs.add(path, "must not be empty")
    elif host == "*" or "/" in host or " " in host:
        errs.add(path, f"{host!r} is not a valid host for a sidecar route")


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
