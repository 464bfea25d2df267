"""Istio's MeshConfig: the mesh-wide settings this control plane honours.

Istio keeps them in the `mesh` key of the `istio` ConfigMap in its root namespace
(istio-system). Only the fields named here are read; the rest of a MeshConfig is
accepted and ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT_NAMESPACE = "istio-system"

ALLOW_ANY = "ALLOW_ANY"
REGISTRY_ONLY = "REGISTRY_ONLY"


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
