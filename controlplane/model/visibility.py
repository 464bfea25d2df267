"""Istio's visibility vocabulary: `exportTo` lists, label selectors written by users, and
the namespace/host patterns of a Sidecar's egress hosts — each validated as Istio
validates it and evaluated as Istio evaluates it.

exportTo: "." the object's own namespace, "*" every namespace, or namespace names
("~", nobody, only on a Service's annotation). An object without one takes the mesh's
default (MeshConfig `default*ExportTo`, "*" unless configured).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from controlplane.model.errors import Errors
from controlplane.model.fields import as_list, as_map, as_str

PRIVATE = "."
PUBLIC = "*"
NONE = "~"

_DNS1123_LABEL = re.compile(r"^[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?$")
# Kubernetes label keys (an optional DNS prefix and a name) and values, Istio's patterns.
_DNS_PREFIX = r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[-a-zA-Z0-9]*" \
              r"[a-zA-Z0-9])?)*/"
_QUALIFIED = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY = re.compile(f"^({_DNS_PREFIX})?({_QUALIFIED})$")
_LABEL_VALUE = re.compile(f"^({_QUALIFIED})?$")


def is_dns1123_label(value: str) -> bool:
    return len(value) <= 63 and bool(_DNS1123_LABEL.match(value))


def parse_export_to(raw: Any, namespace: str, path: str, errs: Errors) -> tuple[str, ...]:
    """A VirtualService's or DestinationRule's spec.exportTo, checked as Istio checks it:
    ".", "*" or namespace names, no duplicates ("." counts as the own namespace), "*"
    alone, and never "~" (only a Service may be exported to nobody)."""
    out: list[str] = []
    seen: dict[str, str] = {}  # namespace -> the entry that named it
    for i, entry in enumerate(as_list(raw, path, errs)):
        value = as_str(entry, f"{path}[{i}]", errs)
        key = namespace if value == PRIVATE else value
        if key in seen:
            errs.add(f"{path}[{i}]", f"{value!r} is listed twice" if seen[key] == value else
                     f"'.' and {namespace!r} are the same namespace, listed twice")
            continue
        if value == NONE:
            errs.add(f"{path}[{i}]", "'~' (nobody) is allowed only on a Service")
            continue
        if value not in (PRIVATE, PUBLIC) and not is_dns1123_label(value):
            errs.add(f"{path}[{i}]", f"{value!r} is not '.', '*' or a namespace name")
            continue
        seen[key] = value
        out.append(value)
    if PUBLIC in out and len(out) > 1:
        errs.add(path, "'*' (every namespace) cannot be combined with other entries")
    return tuple(out)


def service_export_to(annotation: str) -> tuple[str, ...]:
    """The `networking.istio.io/exportTo` annotation of a Service: comma-separated, taken
    as Istio's registry takes it (no validation; an entry naming no namespace matches
    none)."""
    return tuple(e.strip() for e in annotation.split(",") if e.strip())


def resolved_export(export_to: Iterable[str], namespace: str) -> frozenset[str]:
    """The namespaces an object is visible to, "." replaced by its own namespace; "*"
    (everyone) and "~" (nobody) kept as they are."""
    return frozenset(namespace if e == PRIVATE else e for e in export_to)


def is_exported(export: frozenset[str], namespace: str) -> bool:
    return PUBLIC in export or (NONE not in export and namespace in export)


def check_labels(labels: Iterable[tuple[str, str]], path: str, errs: Errors) -> None:
    """Label keys and values as Kubernetes (and Istio's validation) allow them."""
    for key, value in sorted(labels):
        prefix = _LABEL_KEY.match(key)
        if prefix is None or (prefix.group(1) and len(prefix.group(1)) - 1 > 253):
            errs.add(f"{path}.{key}", f"{key!r} is not a valid label key")
        elif not _LABEL_VALUE.match(value) or len(value) > 63:
            errs.add(f"{path}.{key}", f"{value!r} is not a valid label value")


def workload_selector(raw: Any, path: str, errs: Errors) -> frozenset[tuple[str, str]] | None:
    """A workloadSelector's labels (None without one): no empty key, no wildcard."""
    if raw is None:
        return None
    sel = as_map(raw, path, errs)
    labels = as_map(sel.get("labels"), f"{path}.labels", errs)
    out = []
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            errs.add(f"{path}.labels.{key}", "label keys and values must be strings")
            continue
        if not key:
            errs.add(f"{path}.labels", "a label key cannot be empty")
        elif "*" in key or "*" in value:
            errs.add(f"{path}.labels.{key}", "wildcards are not supported in a selector")
        out.append((key, value))
    return frozenset(out)
