"""Istio's MeshConfig: the mesh-wide settings this control plane honours.

Istio keeps them in the `mesh` key of the `istio` ConfigMap in its root namespace
(istio-system), as MeshConfig YAML. Only the fields named here are read; the rest of a
MeshConfig is accepted and ignored, as istiod ignores fields it does not know. A field
we read holding a wrong value rejects the whole ConfigMap, naming the field, and the
last good one stays in force (istiod keeps its last mesh config too). No ConfigMap, or
one without `mesh`, means the defaults (Istio's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from controlplane.model.errors import Errors
from controlplane.model.fields import as_list, as_map, as_str, type_name
from controlplane.model.meta import Meta, parse_meta

ROOT_NAMESPACE = "istio-system"
# The ConfigMap istiod reads its MeshConfig from, and the key holding it.
MESH_CONFIG_MAP = "istio"
MESH_KEY = "mesh"

ALLOW_ANY = "ALLOW_ANY"
REGISTRY_ONLY = "REGISTRY_ONLY"
# MeshConfig.OutboundTrafficPolicy.Mode as protobuf numbers it (JSON accepts either).
_MODES = {REGISTRY_ONLY: REGISTRY_ONLY, ALLOW_ANY: ALLOW_ANY, 0: REGISTRY_ONLY, 1: ALLOW_ANY}
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class MeshConfig:
    # outboundTrafficPolicy.mode: what a sidecar does with a host it does not know.
    outbound_traffic_policy: str = ALLOW_ANY
    # defaultVirtualServiceExportTo, defaultDestinationRuleExportTo, defaultServiceExportTo:
    # the namespaces an object without exportTo is visible to ("*": every namespace,
    # ".": its own).
    default_virtual_service_export_to: tuple[str, ...] = ("*",)
    default_destination_rule_export_to: tuple[str, ...] = ("*",)
    default_service_export_to: tuple[str, ...] = ("*",)
    root_namespace: str = ROOT_NAMESPACE


@dataclass(frozen=True)
class ConfigMap:
    """The `istio` ConfigMap of the root namespace: the mesh config in force. (Other
    ConfigMaps are none of the mesh's business and never become objects.)"""

    meta: Meta
    config: MeshConfig = field(default_factory=MeshConfig)


def is_mesh_config_map(raw: dict[str, Any]) -> bool:
    """Whether a ConfigMap document is the one istiod reads its MeshConfig from."""
    meta = raw.get("metadata")
    return isinstance(meta, dict) and meta.get("name") == MESH_CONFIG_MAP and (
        meta.get("namespace") == ROOT_NAMESPACE)


def parse_config_map(raw: dict[str, Any], errs: Errors) -> ConfigMap:
    meta = parse_meta(raw, errs)
    if (meta.name, meta.namespace) != (MESH_CONFIG_MAP, ROOT_NAMESPACE):
        errs.add("metadata", f"only the ConfigMap {ROOT_NAMESPACE}/{MESH_CONFIG_MAP} is "
                 "read (the mesh config)")
    data = as_map(raw.get("data"), "data", errs)
    text = data.get(MESH_KEY)
    path = f"data.{MESH_KEY}"
    if text is None:
        return ConfigMap(meta)
    if not isinstance(text, str):
        errs.add(path, f"must be a string of MeshConfig YAML, got {type_name(text)}")
        return ConfigMap(meta)
    return ConfigMap(meta, parse_mesh_config(text, path, errs))


def parse_mesh_config(text: str, path: str, errs: Errors) -> MeshConfig:
    """MeshConfig YAML; the fields we read are checked, the others ignored."""
    try:
        doc = yaml.load(text, Loader=_LOADER)
    except yaml.YAMLError as exc:
        errs.add(path, f"invalid YAML: {' '.join(str(exc).split())}")
        return MeshConfig()
    spec = as_map(doc, path, errs)
    policy = as_map(spec.get("outboundTrafficPolicy"), f"{path}.outboundTrafficPolicy", errs)
    mode = ALLOW_ANY
    if "outboundTrafficPolicy" in spec and spec["outboundTrafficPolicy"] is not None:
        # Istio decodes the block into a fresh message: a block without `mode` is the
        # enum's zero value, REGISTRY_ONLY, not the default ALLOW_ANY.
        raw_mode = policy.get("mode")
        mode = REGISTRY_ONLY if raw_mode is None else _mode(raw_mode, errs, path)
    defaults = MeshConfig()
    return MeshConfig(
        outbound_traffic_policy=mode,
        default_virtual_service_export_to=_export_to(
            spec, "defaultVirtualServiceExportTo", path, errs,
            defaults.default_virtual_service_export_to),
        default_destination_rule_export_to=_export_to(
            spec, "defaultDestinationRuleExportTo", path, errs,
            defaults.default_destination_rule_export_to),
        default_service_export_to=_export_to(
            spec, "defaultServiceExportTo", path, errs, defaults.default_service_export_to),
        root_namespace=_root_namespace(spec, path, errs),
    )


def _mode(value: Any, errs: Errors, path: str) -> str:
    where = f"{path}.outboundTrafficPolicy.mode"
    if isinstance(value, bool) or not isinstance(value, str | int) or value not in _MODES:
        if value == "ALLOW_ANY_DYNAMIC_DNS":
            errs.add(where, "ALLOW_ANY_DYNAMIC_DNS is not served by this control plane; use "
                     "ALLOW_ANY or REGISTRY_ONLY")
        else:
            errs.add(where, f"must be ALLOW_ANY or REGISTRY_ONLY, got {value!r}")
        return ALLOW_ANY
    return _MODES[value]


def _export_to(spec: dict[str, Any], key: str, path: str, errs: Errors,
               default: tuple[str, ...]) -> tuple[str, ...]:
    if spec.get(key) is None:
        return default
    where = f"{path}.{key}"
    out = []
    for i, item in enumerate(as_list(spec[key], where, errs)):
        value = as_str(item, f"{where}[{i}]", errs, required=True)
        if value:
            out.append(value)
    # An empty list: protobuf cannot tell it from an unset field, so the default holds.
    return tuple(out) or default


def _root_namespace(spec: dict[str, Any], path: str, errs: Errors) -> str:
    where = f"{path}.rootNamespace"
    value = as_str(spec.get("rootNamespace"), where, errs)
    if value and not _NAMESPACE.match(value):
        errs.add(where, f"{value!r} is not a valid namespace name")
        return ROOT_NAMESPACE
    return value or ROOT_NAMESPACE
