"""Typed readers for Kubernetes-shaped dicts.

Each reader records an error with the field's full path and returns a safe default, so
one parse reports every mistake in an object at once.
"""

from __future__ import annotations

import re
from typing import Any

from controlplane.model.errors import Errors

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
_UNIT_SECONDS = {
    "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9,
}


def as_map(value: Any, path: str, errs: Errors) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        errs.add(path, f"must be an object, got {type_name(value)}")
        return {}
    return value


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


def as_duration(value: Any, path: str, errs: Errors) -> float | None:
    """A protobuf/Go duration string ("1.5s", "100ms", "1m30s") in seconds."""
    if value is None:
        return None
    if not isinstance(value, str) or not _DURATION.match(value):
        errs.add(path, f"must be a duration such as '1s' or '250ms', got {value!r}")
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(value))


def type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)
