"""Object identity shared by every kind: kind, namespace, name, labels, age."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from controlplane.model.errors import Errors
from controlplane.model.fields import as_labels, as_map, as_str

DEFAULT_NAMESPACE = "default"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class Key:
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Meta:
    name: str
    namespace: str
    labels: frozenset[tuple[str, str]] = frozenset()
    creation_timestamp: str = ""
    resource_version: str = ""

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


def object_ref(raw: dict[str, Any]) -> str:
    """`Kind namespace/name` from a raw object, for errors raised before parsing succeeds."""
    meta = raw.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    name = meta.get("name") if isinstance(meta.get("name"), str) else "<unnamed>"
    namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else (
        DEFAULT_NAMESPACE)
    return f"{raw.get('kind', '<no kind>')} {namespace}/{name}"


def parse_meta(raw: dict[str, Any], errs: Errors, *, dns_label: bool = False) -> Meta:
    meta = as_map(raw.get("metadata"), "metadata", errs)
    name = as_str(meta.get("name"), "metadata.name", errs, required=True)
    pattern = DNS_LABEL if dns_label else _DNS_SUBDOMAIN
    if name and (len(name) > (63 if dns_label else 253) or not pattern.match(name)):
        errs.add("metadata.name", f"{name!r} is not a valid DNS "
                 f"{'label' if dns_label else 'subdomain'} name")
    namespace = as_str(meta.get("namespace"), "metadata.namespace", errs) or DEFAULT_NAMESPACE
    if not DNS_LABEL.match(namespace):
        errs.add("metadata.namespace", f"{namespace!r} is not a valid namespace name")
    return Meta(
        name=name,
        namespace=namespace,
        labels=as_labels(meta.get("labels"), "metadata.labels", errs),
        creation_timestamp=str(meta.get("creationTimestamp") or ""),
        resource_version=str(meta.get("resourceVersion") or ""),
    )
