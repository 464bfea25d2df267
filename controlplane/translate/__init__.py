"""Pure functions from a Mesh (and the asking proxy) to Envoy v3 messages.

No I/O, no clocks, no asyncio: the same input gives the same bytes, which the golden
files pin down. Modules by what they build: clusters, endpoints, listeners, routes (and
the destinations, policies, ports, names and headless hosts they share); guard.py
builds and checks one unit; constraints/ (protoc-gen-validate's rules, from Envoy's
descriptors) and envoy_checks.py (what Envoy checks in code) are the checks, over the
vocabulary in violations.py. Code outside this package imports what it needs from here.
"""

from controlplane.translate.clusters import build_clusters, service_clusters
from controlplane.translate.constraints import Violation, check
from controlplane.translate.endpoints import (
    build_load_assignments,
    depends_on_locality,
    priority_labels,
    service_assignments,
)
from controlplane.translate.guard import (
    Failure,
    checked,
    listener_suspects,
    route_suspects,
    service_suspects,
)
from controlplane.translate.listeners import build_listeners, route_names
from controlplane.translate.locality import Place, place_of
from controlplane.translate.outbound import global_clusters
from controlplane.translate.routes import (
    RouteBase,
    RouteHost,
    build_route_configs,
    namespace_hosts,
    plain_routes,
    route_bases,
    route_config_shell,
    route_configs,
    service_routes,
    with_domains,
    with_routes,
)
from controlplane.translate.secrets import proxy_secrets

__all__ = [
    "Failure",
    "Place",
    "RouteBase",
    "RouteHost",
    "Violation",
    "build_clusters",
    "build_listeners",
    "build_load_assignments",
    "build_route_configs",
    "check",
    "checked",
    "depends_on_locality",
    "global_clusters",
    "listener_suspects",
    "namespace_hosts",
    "place_of",
    "plain_routes",
    "priority_labels",
    "proxy_secrets",
    "route_bases",
    "route_config_shell",
    "route_configs",
    "route_names",
    "route_suspects",
    "service_assignments",
    "service_clusters",
    "service_routes",
    "service_suspects",
    "with_domains",
    "with_routes",
]
