"""xDS type URLs and the order in which ADS pushes them."""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

PREFIX = "type.googleapis.com/"
CLUSTER = PREFIX + "envoy.config.cluster.v3.Cluster"
ENDPOINT = PREFIX + "envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = PREFIX + "envoy.config.listener.v3.Listener"
ROUTE = PREFIX + "envoy.config.route.v3.RouteConfiguration"
SECRET = PREFIX + "envoy.extensions.transport_sockets.tls.v3.Secret"

# Make before break: clusters before the endpoints and secrets that warm them, before the
# listeners and routes that send traffic to them.
PUSH_ORDER = (CLUSTER, ENDPOINT, SECRET, LISTENER, ROUTE)
# Types whose content the admin views show. Secrets hold private keys: they are shown by
# name, version and status only, never by content.
SHOWN = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
# Types whose SotW responses must carry every resource (a missing one is a deletion).
WILDCARD_TYPES = frozenset({CLUSTER, LISTENER})
# The type whose resources each of these names (cluster -> its EDS name, listener -> RDS).
DEPENDENT = {CLUSTER: ENDPOINT, LISTENER: ROUTE}
SHORT = {CLUSTER: "CDS", ENDPOINT: "EDS", SECRET: "SDS", LISTENER: "LDS", ROUTE: "RDS"}
BY_SHORT = {v: k for k, v in SHORT.items()}


def short(type_url: str) -> str:
    return SHORT.get(type_url, type_url.removeprefix(PREFIX))

MESSAGE_CLASSES: dict[str, Any] = {
    CLUSTER: cluster_pb2.Cluster,
    ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
    LISTENER: listener_pb2.Listener,
    ROUTE: route_pb2.RouteConfiguration,
    SECRET: secret_pb2.Secret,
}


def decode(type_url: str, body: bytes) -> Any:
    return MESSAGE_CLASSES[type_url].FromString(body)


def resource_name(type_url: str, message: Any) -> str:
    return message.cluster_name if type_url == ENDPOINT else message.name
