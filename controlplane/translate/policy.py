"""The DestinationRule policy in force for one cluster: rule, subset and port levels."""

from __future__ import annotations

from controlplane.model.destination_rule import TrafficPolicy
from controlplane.model.mesh import Mesh


def traffic_policy(mesh: Mesh, fqdn: str, port: int, subset: str = "") -> TrafficPolicy:
    rule = mesh.destination_rules.get(fqdn)
    return rule.policy(subset, port) if rule else TrafficPolicy()
