"""Pure functions from a Mesh (and the asking proxy) to Envoy v3 messages.

No I/O, no clocks, no asyncio: the same input gives the same bytes, which the golden
files pin down. One module per xDS type, plus names.
"""

from controlplane.translate.clusters import build_clusters, service_clusters
from controlplane.translate.endpoints import build_load_assignments, service_assignments
from controlplane.translate.listeners import build_listeners, route_names
from controlplane.translate.proxy import ProxyView, proxy_from_node
from controlplane.translate.routes import build_route_configs

__all__ = [
    "ProxyView",
    "build_clusters",
    "build_listeners",
    "build_load_assignments",
    "build_route_configs",
    "proxy_from_node",
    "route_names",
    "service_assignments",
    "service_clusters",
]
