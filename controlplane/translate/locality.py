"""Locality load balancing, as istiod does it (pilot/pkg/networking/core/loadbalancer):
endpoints grouped by locality, and for one proxy either

- `distribute`: the first rule whose `from` matches the proxy's locality weighs the
  groups of each `to` locality (a group's share split by its size) and empties the
  groups no `to` names; or
- failover (only with outlier detection, else Envoy never leaves priority 0): each
  group's priority by how much of its locality the proxy shares — 0 the same subzone,
  1 the zone, 2 the region, 3 another region, 4 a region other than the `failover`
  target of the proxy's region — then renumbered 0..N without gaps.

Istio's mesh default turns locality load balancing on, so a DestinationRule with
outlier detection and no `localityLbSetting` fails over by locality; `enabled: false`
turns it off. One difference: an endpoint whose region is unknown (a zone from an
EndpointSlice, see model/locality.py) counts as in the proxy's region.

Only a cluster whose assignment this changes for some proxy (`depends_on_proxy`) gets
an assignment per proxy locality (controlplane.translation); every other cluster's is
shared by all proxies, as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2

from controlplane.model.destination_rule import LocalityLbSetting, TrafficPolicy
from controlplane.model.locality import split
from controlplane.model.mesh import Endpoint

# Istio's default MeshConfig.localityLbSetting.
MESH_DEFAULT = LocalityLbSetting(enabled=True)


def effective_setting(policy: TrafficPolicy) -> LocalityLbSetting | None:
    """The DestinationRule's setting, else the mesh's; None when turned off."""
    lb = policy.load_balancer
    setting = lb.locality if lb is not None and lb.locality is not None else MESH_DEFAULT
    return None if setting.enabled is False else setting


def weighs_localities(policy: TrafficPolicy) -> bool:
    """Whether the cluster needs Envoy's locality-weighted load balancing: for
    `distribute`, and for an explicit failover (as istiod sets it)."""
    setting = effective_setting(policy)
    if setting is None:
        return False
    return bool(setting.distribute) or (policy.outlier_detection is not None
                                        and bool(setting.failover))


def apply_locality_config(cluster: cluster_pb2.Cluster, policy: TrafficPolicy) -> None:
    if weighs_localities(policy):
        cluster.common_lb_config.locality_weighted_lb_config.SetInParent()


def depends_on_proxy(policy: TrafficPolicy, endpoints: Sequence[Endpoint]) -> bool:
    """Whether the cluster's assignment differs between proxies in different places."""
    setting = effective_setting(policy)
    if setting is None or not endpoints:
        return False
    if setting.distribute:
        return True
    if policy.outlier_detection is None:
        return False
    first = endpoints[0].locality
    return any(e.locality != first for e in endpoints)  # one locality: one priority


def locality_groups(endpoints: Sequence[Endpoint]) -> list[tuple[str, list[Endpoint]]]:
    """Endpoints by locality, localities in order ("" first), endpoints in theirs."""
    first = endpoints[0].locality if endpoints else ""
    if all(e.locality == first for e in endpoints):  # the common case: one group
        return [(first, list(endpoints))] if endpoints else []
    groups: dict[str, list[Endpoint]] = {}
    for e in endpoints:
        groups.setdefault(e.locality, []).append(e)
    return sorted(groups.items())


def locality_message(locality: str) -> base_pb2.Locality:
    region, zone, subzone = split(locality)
    return base_pb2.Locality(region=region, zone=zone, sub_zone=subzone)


@dataclass(frozen=True)
class Plan:
    """One proxy's view of a cluster's locality groups (in locality_groups order)."""

    weights: tuple[int, ...]
    priorities: tuple[int, ...]
    emptied: frozenset[int] = frozenset()


def _known(proxy: str, endpoint: str) -> tuple[str, str, str]:
    region, zone, subzone = split(endpoint)
    if not region and zone:  # the region of a zone from an EndpointSlice is unknown
        region = split(proxy)[0]
    return region, zone, subzone


def matches(locality: tuple[str, str, str], rule: str) -> bool:
    """Istio's LocalityMatch: `rule` ("us", "us/a", "us/*"...) covers `locality`."""
    parts = split(rule)
    return all(r == "*" or (i > 0 and not r) or r == have
               for i, (r, have) in enumerate(zip(parts, locality, strict=True)))


def _priority(proxy: tuple[str, str, str], endpoint: tuple[str, str, str],
              failover: tuple[tuple[str, str], ...]) -> int:
    if proxy[0] == endpoint[0]:
        if proxy[1] == endpoint[1]:
            return 0 if proxy[2] == endpoint[2] else 1
        return 2
    for source, target in failover:
        if source == proxy[0]:
            return 3 if endpoint[0] == target else 4
    return 3


def plan(policy: TrafficPolicy, localities: Sequence[str], sizes: Sequence[int],
         proxy: str) -> Plan:
    setting = effective_setting(policy)
    weights = tuple(sizes)
    none = Plan(weights, (0,) * len(localities))
    if setting is None:
        return none
    here = split(proxy)
    known = [_known(proxy, loc) for loc in localities]
    if setting.distribute:
        rule = next((to for source, to in setting.distribute if matches(here, source)), None)
        if rule is None:
            return none
        out = list(weights)
        unmatched = set(range(len(localities)))
        for target, weight in rule:
            chosen = [i for i in sorted(unmatched) if matches(known[i], target)]
            total = sum(sizes[i] for i in chosen)
            for i in chosen:
                unmatched.discard(i)
                share = sizes[i] * weight / total
                if share > 0:
                    out[i] = math.ceil(share)
        return Plan(tuple(out), none.priorities, frozenset(unmatched))
    if policy.outlier_detection is None:
        return none
    raw = [_priority(here, k, setting.failover) for k in known]
    rank = {p: i for i, p in enumerate(sorted(set(raw)))}  # 0..N, no gaps
    return Plan(weights, tuple(rank[p] for p in raw))
