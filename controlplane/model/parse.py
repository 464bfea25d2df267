"""From a Kubernetes-shaped dict to a model object, or a ValidationError naming the field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controlplane.model.destination_rule import DestinationRule
from controlplane.model.destination_rule_parse import parse_destination_rule
from controlplane.model.errors import Errors, FieldError, ValidationError
from controlplane.model.istio_common import ISTIO_GROUP, ISTIO_VERSIONS
from controlplane.model.mesh_config import ConfigMap, parse_config_map
from controlplane.model.meta import Key, object_ref
from controlplane.model.secret import Secret, parse_secret
from controlplane.model.service import Service, parse_service
from controlplane.model.sidecar import Sidecar, parse_sidecar
from controlplane.model.virtual_service import VirtualService
from controlplane.model.virtual_service_parse import parse_virtual_service
from controlplane.model.workload import (
    Endpoints,
    EndpointSlice,
    Pod,
    parse_endpoint_slice,
    parse_endpoints,
    parse_pod,
)

Object = (Service | Pod | Endpoints | EndpointSlice | VirtualService | DestinationRule
          | ConfigMap | Sidecar | Secret)

# kind -> (accepted apiVersions, parser)
_KINDS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any], Errors], Object]]] = {
    "Service": (("v1",), parse_service),
    "Pod": (("v1",), parse_pod),
    "Endpoints": (("v1",), parse_endpoints),
    "EndpointSlice": (("discovery.k8s.io/v1",), parse_endpoint_slice),
    "VirtualService": (tuple(f"{ISTIO_GROUP}/{v}" for v in ISTIO_VERSIONS),
                       parse_virtual_service),
    "DestinationRule": (tuple(f"{ISTIO_GROUP}/{v}" for v in ISTIO_VERSIONS),
                        parse_destination_rule),
    # Only istio-system/istio, the mesh config (mesh_config.is_mesh_config_map): sources
    # pass other ConfigMaps by without a word.
    "ConfigMap": (("v1",), parse_config_map),
    "Sidecar": (tuple(f"{ISTIO_GROUP}/{v}" for v in ISTIO_VERSIONS), parse_sidecar),
    "Secret": (("v1",), parse_secret),  # only what credentialName can use is kept
}
KINDS = tuple(_KINDS)


def is_known_kind(raw: dict[str, Any]) -> bool:
    return raw.get("kind") in _KINDS


def parse_object(raw: Any) -> Object:
    """Parse one object of a kind in KINDS; raise ValidationError with every bad field."""
    if not isinstance(raw, dict):
        raise ValidationError("<document>", [FieldError("", "must be a mapping (an object)")])
    ref = object_ref(raw)
    kind = raw.get("kind")
    if kind not in _KINDS:
        raise ValidationError(ref, [FieldError("kind", f"unsupported kind {kind!r}; supported: "
                                               f"{', '.join(KINDS)}")])
    versions, parser = _KINDS[kind]
    api_version = raw.get("apiVersion")
    if api_version not in versions:
        raise ValidationError(ref, [FieldError(
            "apiVersion", f"{api_version!r} is not served for {kind}; use one of "
            f"{', '.join(versions)}")])
    errs = Errors()
    obj = parser(raw, errs)
    errs.raise_for(ref)
    return obj


def key_of(obj: Object) -> Key:
    return Key(type(obj).__name__, obj.meta.namespace, obj.meta.name)
