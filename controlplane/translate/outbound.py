"""Istio's outbound traffic policy: what a sidecar does with a host the mesh does not know.

Every proxy gets Istio's two catch-all clusters, whatever the mode (istiod always sends
both): `PassthroughCluster` (ORIGINAL_DST: to wherever the client connected) and
`BlackHoleCluster` (STATIC, no endpoints: nowhere). Each HTTP port's route configuration
ends with a catch-all virtual host (domains `*`): with ALLOW_ANY, `allow_any`, routing to
PassthroughCluster; with REGISTRY_ONLY, `block_all`, answering 502 itself.

Here, unlike a sidecar behind iptables, every listener is bound to the proxy's own
address and port, so the connection's destination is the listener itself: Envoy has no
original destination to restore, and PassthroughCluster finds no host (503, response
flag UH, `cluster.PassthroughCluster.upstream_cx_none_healthy`) rather than connecting
back to its own listener (Envoy's original_dst_cluster.cc takes the connection's local
address only once a listener filter restored it; tests/test_outbound.py holds it).
Applications reach unknown hosts directly, never through the sidecar. TCP ports keep
their first service as the default chain (see listeners.py), so no TCP connection
reaches a fallthrough chain; the clusters are there for it all the same.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2

from controlplane.model.mesh_config import ALLOW_ANY
from controlplane.translate.clusters import CONNECT_TIMEOUT_S, HTTP_PROTOCOL_OPTIONS, thresholds
from controlplane.translate.protos import duration

# Istio's names, so dashboards and habits carry over.
PASSTHROUGH_CLUSTER = "PassthroughCluster"
BLACKHOLE_CLUSTER = "BlackHoleCluster"
ALLOW_ANY_HOST = "allow_any"
BLOCK_ALL_HOST = "block_all"
CATCH_ALL_DOMAIN = "*"
_PASSTHROUGH_IDLE_TIMEOUT_S = 300  # Istio's: five minutes


def passthrough_cluster() -> cluster_pb2.Cluster:
    """To the original destination of the downstream connection, speaking whatever
    protocol the client spoke; Istio's limits (none) and idle timeout."""
    options = http_protocol_options_pb2.HttpProtocolOptions(
        common_http_protocol_options=protocol_pb2.HttpProtocolOptions(
            idle_timeout=duration(_PASSTHROUGH_IDLE_TIMEOUT_S)),
        use_downstream_protocol_config=(
            http_protocol_options_pb2.HttpProtocolOptions.UseDownstreamHttpConfig(
                http_protocol_options=protocol_pb2.Http1ProtocolOptions(),
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions())))
    cluster = cluster_pb2.Cluster(
        name=PASSTHROUGH_CLUSTER, type=cluster_pb2.Cluster.ORIGINAL_DST,
        connect_timeout=duration(CONNECT_TIMEOUT_S),
        lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED, circuit_breakers=thresholds(None))
    cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(options)
    return cluster


def blackhole_cluster() -> cluster_pb2.Cluster:
    """No endpoints: every connection to it fails (`upstream_cx_none_healthy`)."""
    return cluster_pb2.Cluster(
        name=BLACKHOLE_CLUSTER, type=cluster_pb2.Cluster.STATIC,
        connect_timeout=duration(CONNECT_TIMEOUT_S), lb_policy=cluster_pb2.Cluster.ROUND_ROBIN)


# Built once: the same message objects every push, so the cache never re-serializes them.
_GLOBAL_CLUSTERS = (blackhole_cluster(), passthrough_cluster())


def global_clusters() -> tuple[cluster_pb2.Cluster, ...]:
    """The clusters every proxy gets whatever the mesh holds. Never mutate them."""
    return _GLOBAL_CLUSTERS


def catch_all_virtual_host(mode: str) -> rc.VirtualHost:
    """The last word of an HTTP port's routes: Host headers no service answers to."""
    if mode == ALLOW_ANY:
        action = rc.RouteAction(cluster=PASSTHROUGH_CLUSTER, timeout=duration(0))
        return rc.VirtualHost(name=ALLOW_ANY_HOST, domains=[CATCH_ALL_DOMAIN], routes=[
            rc.Route(name=ALLOW_ANY_HOST, match=rc.RouteMatch(prefix="/"), route=action)])
    return rc.VirtualHost(name=BLOCK_ALL_HOST, domains=[CATCH_ALL_DOMAIN], routes=[
        rc.Route(name=BLOCK_ALL_HOST, match=rc.RouteMatch(prefix="/"),
                 direct_response=rc.DirectResponseAction(status=502))])
