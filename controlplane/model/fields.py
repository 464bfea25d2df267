"""Typed readers for Kubernetes-shaped dicts.

Each reader records an error with the field's full path and returns a safe default, so
one parse reports every mistake in an object at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Set
from decimal import Decimal
from typing import Any

from controlplane.model.errors import Errors

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_SECONDS = {
    "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9,
}
_UNIT_NANOS = {"h": 3600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3,
               "µs": 10**3, "ns": 1}
# google.protobuf.Duration holds at most 10,000 years: Istio cannot even read a longer one.
MAX_DURATION_NANOS = 315_576_000_000 * 10**9
# Istio checks a duration as a Go time.Duration, which saturates at 2^63-1 ns (~292
# years); the saturated value is not a whole number of milliseconds, so it is rejected.
_MAX_GO_DURATION_NANOS = 2**63 - 1


def as_map(value: Any, path: str, errs: Errors) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errs.add(path, f"must be an object, got {type_name(value)}")
        return {}
    return value


def reject_unknown_fields(
    m: Mapping[Any, Any], known: Set[str], path: str, errs: Errors, *, hint: str = "",
) -> None:
    """An "unknown field" error for each key of `m` not in `known`, in sorted order, so a
    misspelt field is reported rather than silently ignored. `hint` (e.g. "use set, add
    or remove") follows the message after a semicolon."""
    message = f"unknown field; {hint}" if hint else "unknown field"
    for key in sorted(set(m) - known, key=str):  # YAML allows non-string keys
        errs.add(f"{path}.{key}", message)


def as_list(value: Any, path: str, errs: Errors) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        errs.add(path, f"must be a list, got {type_name(value)}")
        return []
    return value


def as_str(value: Any, path: str, errs: Errors, *, required: bool = False) -> str:
    if value is None:
        if required:
            errs.add(path, "is required")
        return ""
    if not isinstance(value, str):
        errs.add(path, f"must be a string, got {type_name(value)}")
        return ""
    if required and not value:
        errs.add(path, "must not be empty")
    return value


def as_int(
    value: Any, path: str, errs: Errors, *, lo: int | None = None, hi: int | None = None,
    required: bool = False,
) -> int | None:
    if value is None:
        if required:
            errs.add(path, "is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        errs.add(path, f"must be an integer, got {type_name(value)}")
        return None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        errs.add(path, f"must be between {lo} and {hi}, got {value}")
        return None
    return value


def as_bool(value: Any, path: str, errs: Errors) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        errs.add(path, f"must be true or false, got {type_name(value)}")
        return False
    return value


def as_labels(value: Any, path: str, errs: Errors) -> frozenset[tuple[str, str]]:
    """Labels as a frozenset of pairs: a selector matches when it is a subset."""
    labels = as_map(value, path, errs)
    pairs = []
    for key, val in labels.items():
        if not isinstance(key, str) or not isinstance(val, str | int | float | bool):
            errs.add(f"{path}.{key}", "label values must be strings")
            continue
        pairs.append((key, val if isinstance(val, str) else str(val).lower()
                      if isinstance(val, bool) else str(val)))
    return frozenset(pairs)


def duration_nanos(value: str) -> int:
    """A duration string already matched by _DURATION, exactly, in nanoseconds (rounded
    down, as Go's parser does): no float, so a 400-digit number stays a number."""
    return int(sum(Decimal(n) * _UNIT_NANOS[u] for n, u in _DURATION_PART.findall(value)))


def as_duration(value: Any, path: str, errs: Errors) -> float | None:
    """A protobuf/Go duration string ("1.5s", "100ms", "1m30s") in seconds; at most what a
    protobuf Duration holds (10,000 years), as Istio cannot represent more."""
    if value is None:
        return None
    if not isinstance(value, str) or not _DURATION.match(value):
        errs.add(path, f"must be a duration such as '1s' or '250ms', got {value!r}")
        return None
    if duration_nanos(value) > MAX_DURATION_NANOS:
        errs.add(path, f"{value!r} is longer than a protobuf Duration holds (10,000 years)")
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))


def as_istio_duration(value: Any, path: str, errs: Errors) -> float | None:
    """A duration Istio's ValidateDuration accepts: at least 1ms, in whole milliseconds
    (and not past what a Go duration holds). Shorter ones would reach Envoy as 0 or as
    sub-millisecond values, which Envoy rejects or Istio never sends."""
    seconds = as_duration(value, path, errs)
    if seconds is None:
        return None
    nanos = duration_nanos(value)
    if nanos < 10**6:
        errs.add(path, f"must be at least 1ms, got {value!r}")
        return None
    if nanos % 10**6 or nanos > _MAX_GO_DURATION_NANOS:
        errs.add(path, f"must be a whole number of milliseconds (at most ~292 years), "
                 f"got {value!r}")
        return None
    return seconds


def type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)
