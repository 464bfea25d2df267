"""One Envoy config dump, read: the JSON of Envoy's `/config_dump?include_eds` or of the
control plane's `/debug/config_dump?proxy=NODE` (the same shape, field names as in the
protos), indexed by name. Only what explain walks is kept; the rest is ignored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]


@dataclass
class ConfigDump:
    listeners: list[Json] = field(default_factory=list)
    route_configs: dict[str, Json] = field(default_factory=dict)
    clusters: dict[str, Json] = field(default_factory=dict)
    # EDS service name -> ClusterLoadAssignment
    endpoints: dict[str, Json] = field(default_factory=dict)


def _kind(config: Json) -> str:
    return str(config.get("@type", "")).rsplit(".", 1)[-1]


def parse_dump(dump: Json) -> ConfigDump:
    """Each part of a config dump, whichever of the two produced it (active listeners
    only: a warming one does not take connections yet)."""
    out = ConfigDump()
    for config in dump.get("configs", []):
        kind = _kind(config)
        if kind == "ListenersConfigDump":
            for s in config.get("static_listeners", []):
                out.listeners.append(s.get("listener", {}))
            for d in config.get("dynamic_listeners", []):
                if "active_state" in d:
                    out.listeners.append(d["active_state"].get("listener", {}))
        elif kind == "RoutesConfigDump":
            for part in ("static_route_configs", "dynamic_route_configs"):
                for r in config.get(part, []):
                    rc = r.get("route_config", {})
                    out.route_configs[rc.get("name", "")] = rc
        elif kind == "ClustersConfigDump":
            for part in ("static_clusters", "dynamic_active_clusters"):
                for c in config.get(part, []):
                    cluster = c.get("cluster", {})
                    out.clusters[cluster.get("name", "")] = cluster
        elif kind == "EndpointsConfigDump":
            for part in ("static_endpoint_configs", "dynamic_endpoint_configs"):
                for e in config.get(part, []):
                    cla = e.get("endpoint_config", {})
                    out.endpoints[cla.get("cluster_name", "")] = cla
    return out
