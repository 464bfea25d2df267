"""Locality load balancing, as istiod does it (pilot/pkg/networking/core/loadbalancer):
endpoints grouped by locality, and for one proxy either

- `distribute`: the first rule whose `from` matches the proxy's locality weighs the
  groups of each `to` locality (a group's share split by its size) and empties the
  groups no `to` names; or
- failover (only with outlier detection, else Envoy never leaves priority 0): each
  group's priority by how much of its locality the proxy shares — 0 the same subzone,
  1 the zone, 2 the region, 3 another region, 4 a region other than the `failover`
  target of the proxy's region — then renumbered 0..N without gaps; with
  `failoverPriority`, each group is first split by how many of the listed labels its
  endpoints share with the proxy, and locality only orders within that (when `failover`
  is also given).

Istio's mesh default turns locality load balancing on, so a DestinationRule with
outlier detection and no `localityLbSetting` fails over by locality; `enabled: false`
turns it off. One difference: an endpoint whose region is unknown (a zone from an
EndpointSlice, see model/locality.py) counts as in the proxy's region.

Only a cluster whose assignment this changes for some proxy (`depends_on_proxy`) gets
an assignment per proxy `Place` (controlplane.translation); every other cluster's is
shared by all proxies, as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

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
                                        and bool(setting.failover
                                                 or setting.failover_priority))


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
    if setting.failover_priority:  # by the proxy's labels
        return True
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
class Place:
    """What about a proxy its endpoints depend on: its locality and, of its labels
    (with its locality's topology labels), those some `failoverPriority` names."""

    locality: str = ""
    labels: tuple[tuple[str, str], ...] = ()
    labelled: bool = False  # whether it has any label at all (Istio: else no ordering)


@dataclass(frozen=True)
class Group:
    """One LocalityLbEndpoints of an assignment."""

    locality: str
    members: tuple[Endpoint, ...]
    weight: int
    priority: int = 0
    emptied: bool = False  # `distribute` names no locality of it: no endpoints


REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
SUBZONE_LABEL = "topology.istio.io/subzone"
NETWORK_LABEL = "topology.istio.io/network"


def topology_labels(locality: tuple[str, str, str]) -> dict[str, str]:
    """The labels Istio adds to a workload's own from its locality."""
    return {k: v for k, v in zip((REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL), locality,
                                 strict=True) if v}


def place_of(locality: str, labels: frozenset[tuple[str, str]], names: frozenset[str]
             ) -> Place:
    """A proxy's Place, keeping only the label `names` some rule orders by."""
    if not names:
        return Place(locality)
    found = {**dict(labels), **topology_labels(split(locality))}
    return Place(locality, tuple(sorted((k, v) for k, v in found.items() if k in names)),
                 bool(found))


def priority_label_names(policy: TrafficPolicy) -> frozenset[str]:
    setting = effective_setting(policy)
    if setting is None or setting.distribute or policy.outlier_detection is None:
        return frozenset()
    return frozenset(p.split("=", 1)[0] for p in setting.failover_priority)


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


def _renumbered(groups: list[Group], raw: list[int]) -> list[Group]:
    rank = {p: i for i, p in enumerate(sorted(set(raw)))}  # 0..N, no gaps
    return [replace(g, priority=rank[p]) for g, p in zip(groups, raw, strict=True)]


def _distribute(groups: list[Group], rules: tuple[tuple[str, tuple[tuple[str, int], ...]], ...],
                place: Place) -> list[Group]:
    here = split(place.locality)
    rule = next((to for source, to in rules if matches(here, source)), None)
    if rule is None:
        return groups
    known = [_known(place.locality, g.locality) for g in groups]
    out = list(groups)
    unmatched = set(range(len(groups)))
    for target, weight in rule:
        chosen = [i for i in sorted(unmatched) if matches(known[i], target)]
        total = sum(groups[i].weight for i in chosen)
        for i in chosen:
            unmatched.discard(i)
            share = groups[i].weight * weight / total
            if share > 0:
                out[i] = replace(out[i], weight=math.ceil(share))
    return [replace(g, emptied=True) if i in unmatched else g for i, g in enumerate(out)]


def _by_labels(groups: list[Group], priority: tuple[str, ...], place: Place) -> list[Group]:
    """Istio's failoverPriority: each locality group split by how many of the labels, in
    order, an endpoint shares with the proxy ("label=value" compares with the value
    instead); a differing network (first) only lowers the priority."""
    if not place.labelled:
        return groups
    mine = dict(place.labels)
    names = [p.split("=", 1)[0] for p in priority]
    wanted = {n: (p.split("=", 1)[1] if "=" in p else mine.get(n, ""))
              for n, p in zip(names, priority, strict=True)}
    lowest = len(names)
    network_first = bool(names) and names[0] == NETWORK_LABEL
    out: list[Group] = []
    raw: list[int] = []
    for g in groups:
        topology = topology_labels(_known(place.locality, g.locality))
        by_priority: dict[int, list[Endpoint]] = {}
        for e in g.members:
            labels = {**dict(e.labels), **topology}
            level, adjust = 0, 0
            for j, name in enumerate(names):
                if wanted[name] != labels.get(name, ""):
                    if j == 0 and network_first:
                        adjust = lowest
                        continue
                    level = lowest - j
                    break
            by_priority.setdefault(level + adjust, []).append(e)
        for level in sorted(by_priority):
            members = by_priority[level]
            out.append(Group(g.locality, tuple(members), len(members)))
            raw.append(level)
    return _renumbered(out, raw)


def proxy_groups(policy: TrafficPolicy | None, endpoints: Sequence[Endpoint],
                 place: Place | None) -> list[Group]:
    """The assignment's groups: by locality, and for a proxy at `place` weighed or
    prioritized as the policy says (None: the plain groups every proxy could share)."""
    groups = [Group(loc, tuple(members), len(members))
              for loc, members in locality_groups(endpoints)]
    setting = effective_setting(policy) if policy is not None and place is not None else None
    if setting is None or place is None or policy is None:
        return groups
    if setting.distribute:
        return _distribute(groups, setting.distribute, place)
    if policy.outlier_detection is None:
        return groups
    if setting.failover_priority:
        groups = _by_labels(groups, setting.failover_priority, place)
        if not setting.failover:
            return groups
    here = split(place.locality)
    raw = [g.priority * 5 + _priority(here, _known(place.locality, g.locality),
                                      setting.failover) for g in groups]
    return _renumbered(groups, raw)
