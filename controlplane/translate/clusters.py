"""CDS: one EDS cluster per service port, one per DestinationRule subset, one per pod
hostname of a headless service; each with the DestinationRule policy in force (its
client TLS from upstream_tls.py)."""

from __future__ import annotations

import functools
from collections.abc import Iterator

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import wrappers_pb2

from controlplane.model.destination_rule import (
    ConnectionPool,
    LoadBalancer,
    OutlierDetection,
    TrafficPolicy,
)
from controlplane.model.mesh import Mesh
from controlplane.model.service import Protocol, Service, ServicePort
from controlplane.translate.headless import pod_hosts
from controlplane.translate.locality import apply_locality_config
from controlplane.translate.metadata import DESTINATION_RULE, object_metadata
from controlplane.translate.names import cluster_name
from controlplane.translate.policy import traffic_policy
from controlplane.translate.protos import ads_source, duration
from controlplane.translate.slow_start import apply_slow_start
from controlplane.translate.upstream_tls import auto_sni, transport_socket

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
CONNECT_TIMEOUT_S = 10  # Istio's default
# Istio lifts Envoy's default limits (1024 connections, requests...), which otherwise
# overflow silently under real load; DestinationRule connectionPool lowers them again.
_UNLIMITED = 4294967295
NO_POLICY = TrafficPolicy()
_LB = {"ROUND_ROBIN": cluster_pb2.Cluster.ROUND_ROBIN,
       "LEAST_REQUEST": cluster_pb2.Cluster.LEAST_REQUEST,
       "RANDOM": cluster_pb2.Cluster.RANDOM}


def _u32(value: int | None) -> wrappers_pb2.UInt32Value:
    return wrappers_pb2.UInt32Value(value=_UNLIMITED if value is None else value)


def thresholds(pool: ConnectionPool | None) -> circuit_breaker_pb2.CircuitBreakers:
    pool = pool or ConnectionPool()
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[
        circuit_breaker_pb2.CircuitBreakers.Thresholds(
            max_connections=_u32(pool.max_connections),
            max_pending_requests=_u32(pool.http1_max_pending_requests),
            max_requests=_u32(pool.http2_max_requests),
            max_retries=_u32(pool.max_retries),
            track_remaining=True,
        )
    ])


def _protocol_options(port: ServicePort, pool: ConnectionPool | None,
                      upstream: protocol_pb2.UpstreamHttpProtocolOptions | None = None,
                      ) -> http_protocol_options_pb2.HttpProtocolOptions | None:
    common = protocol_pb2.HttpProtocolOptions()
    if pool is not None and pool.idle_timeout is not None:
        common.idle_timeout.CopyFrom(duration(pool.idle_timeout))
    if pool is not None and pool.max_requests_per_connection:
        common.max_requests_per_connection.value = pool.max_requests_per_connection
    if port.l7 is not Protocol.HTTP2 and common.ByteSize() == 0 and upstream is None:
        return None
    explicit = http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig()
    if port.l7 is Protocol.HTTP2:
        explicit.http2_protocol_options.CopyFrom(protocol_pb2.Http2ProtocolOptions())
        if pool is not None and pool.http2_keepalive is not None:
            keepalive = explicit.http2_protocol_options.connection_keepalive
            keepalive.interval.CopyFrom(duration(pool.http2_keepalive[0]))
            keepalive.timeout.CopyFrom(duration(pool.http2_keepalive[1]))
    else:
        explicit.http_protocol_options.CopyFrom(protocol_pb2.Http1ProtocolOptions())
    out = http_protocol_options_pb2.HttpProtocolOptions(explicit_http_config=explicit)
    if common.ByteSize():
        out.common_http_protocol_options.CopyFrom(common)
    if upstream is not None:
        out.upstream_http_protocol_options.CopyFrom(upstream)
    return out


def _load_balancing(cluster: cluster_pb2.Cluster, lb: LoadBalancer | None) -> None:
    if lb is None:
        return
    ch = lb.consistent_hash
    if ch is not None:
        if ch.maglev:
            cluster.lb_policy = cluster_pb2.Cluster.MAGLEV
            if ch.table_size:
                cluster.maglev_lb_config.table_size.value = ch.table_size
        else:
            cluster.lb_policy = cluster_pb2.Cluster.RING_HASH
            if ch.minimum_ring_size:
                cluster.ring_hash_lb_config.minimum_ring_size.value = ch.minimum_ring_size
    elif lb.simple in _LB:
        cluster.lb_policy = _LB[lb.simple]
        apply_slow_start(cluster, lb.warmup)


def _outlier(od: OutlierDetection) -> outlier_detection_pb2.OutlierDetection:
    out = outlier_detection_pb2.OutlierDetection(
        interval=duration(od.interval), base_ejection_time=duration(od.base_ejection_time),
        max_ejection_percent=wrappers_pb2.UInt32Value(value=od.max_ejection_percent))
    # Istio's mapping: a count of 0 disables that detector; a set one is always enforced.
    out.consecutive_5xx.value = od.consecutive_5xx_errors
    out.enforcing_consecutive_5xx.value = 100 if od.consecutive_5xx_errors else 0
    if od.consecutive_gateway_errors:
        out.consecutive_gateway_failure.value = od.consecutive_gateway_errors
        out.enforcing_consecutive_gateway_failure.value = 100
    else:
        out.enforcing_consecutive_gateway_failure.value = 0
    out.enforcing_success_rate.value = 0
    return out


def is_passthrough(policy: TrafficPolicy) -> bool:
    return policy.load_balancer is not None and policy.load_balancer.simple == "PASSTHROUGH"


# The DestinationRule behind a cluster's policy: (namespace, name, each setting's level).
PolicySource = tuple[str, str, tuple[tuple[str, str], ...]]


@functools.lru_cache(maxsize=1 << 16)
def build_cluster(name: str, port: ServicePort, policy: TrafficPolicy = NO_POLICY,
                  source: PolicySource | None = None) -> cluster_pb2.Cluster:
    """Memoized on its (immutable) inputs: an unchanged cluster is the same message object
    from push to push, so the cache skips serializing it. Never mutate the result."""
    pool = policy.connection_pool
    cluster = cluster_pb2.Cluster(
        name=name,
        connect_timeout=duration(pool.connect_timeout if pool and pool.connect_timeout
                                  else CONNECT_TIMEOUT_S),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        circuit_breakers=thresholds(pool),
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(
            # Istio's choice: no panic mode, so unhealthy hosts are never used.
            healthy_panic_threshold=percent_pb2.Percent(value=0),
        ),
    )
    if is_passthrough(policy):
        # Connect to where the client was going, as Istio's PASSTHROUGH does.
        cluster.type = cluster_pb2.Cluster.ORIGINAL_DST
        cluster.lb_policy = cluster_pb2.Cluster.CLUSTER_PROVIDED
    else:
        cluster.type = cluster_pb2.Cluster.EDS
        cluster.eds_cluster_config.CopyFrom(cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_source(), service_name=name))
        _load_balancing(cluster, policy.load_balancer)
    if pool is not None and pool.tcp_keepalive_time is not None:
        keepalive = address_pb2.TcpKeepalive()
        # A uint32 of seconds: clamped rather than raising on a value the model let by.
        keepalive.keepalive_time.value = min(max(1, round(pool.tcp_keepalive_time)),
                                             2**32 - 1)
        cluster.upstream_connection_options.tcp_keepalive.CopyFrom(keepalive)
    if policy.outlier_detection is not None:
        cluster.outlier_detection.CopyFrom(_outlier(policy.outlier_detection))
        if policy.outlier_detection.min_health_percent is not None:
            cluster.common_lb_config.healthy_panic_threshold.value = (
                policy.outlier_detection.min_health_percent)
    apply_locality_config(cluster, policy)
    options = (_protocol_options(port, pool, auto_sni(policy.tls)) if port.l7.is_http
               else None)
    if options is not None:
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(options)
    socket = transport_socket(policy.tls, port)
    if socket is not None:
        cluster.transport_socket.CopyFrom(socket)
    if source is not None:
        ns, rule, levels = source
        cluster.metadata.CopyFrom(object_metadata(DESTINATION_RULE, ns, rule,
                                                  {"policy": dict(levels)}))
    return cluster


def proxied_ports(service: Service) -> Iterator[ServicePort]:
    return (p for p in service.ports if p.l7 is not Protocol.UNSUPPORTED)


def service_clusters(mesh: Mesh, service: Service) -> list[cluster_pb2.Cluster]:
    """The clusters of one service: the translator's unit of reuse between pushes."""
    fqdn = service.fqdn
    rule = mesh.destination_rules.get(fqdn)

    def source(port: int, subset: str = "", only: str = "") -> PolicySource | None:
        if rule is None:
            return None
        levels = rule.policy_sources(subset, port)
        if only:
            levels = tuple(x for x in levels if x[0] == only)
        # Only a cluster that takes a setting from the rule says so: a rule of subsets
        # alone would add ~95 bytes to each of its clusters (+63% CDS on the benchmark
        # mesh) to say what the subset in the cluster's name says already.
        return (rule.meta.namespace, rule.meta.name, levels) if levels else None
    out = []
    for port in proxied_ports(service):
        out.append(build_cluster(cluster_name(port.port, fqdn), port,
                                 traffic_policy(mesh, fqdn, port.port), source(port.port)))
        for subset in rule.subsets if rule else ():
            out.append(build_cluster(cluster_name(port.port, fqdn, subset.name), port,
                                     traffic_policy(mesh, fqdn, port.port, subset.name),
                                     source(port.port, subset.name)))
        # A pod's own cluster takes only the port's TLS: traffic asked to be encrypted
        # must not leave in plaintext because it was addressed to one pod.
        tls = traffic_policy(mesh, fqdn, port.port).tls
        for pod_fqdn, _ in pod_hosts(mesh, service, port):
            out.append(build_cluster(cluster_name(port.port, pod_fqdn), port,
                                     TrafficPolicy(tls=tls) if tls else NO_POLICY,
                                     source(port.port, only="tls") if tls else None))
    return out


def build_clusters(mesh: Mesh) -> list[cluster_pb2.Cluster]:
    """The services' clusters (the catch-all ones are outbound.global_clusters)."""
    return [c for service in mesh.services.values() for c in service_clusters(mesh, service)]
