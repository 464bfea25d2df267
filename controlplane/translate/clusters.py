"""CDS: one EDS cluster per service port, and one per DestinationRule subset."""

from __future__ import annotations

from collections.abc import Iterator

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2
from envoy.config.core.v3 import config_source_pb2, protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from controlplane.model.mesh import Mesh
from controlplane.model.service import Protocol, Service, ServicePort
from controlplane.translate.headless import pod_hosts
from controlplane.translate.names import cluster_name

HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
CONNECT_TIMEOUT_S = 10  # Istio's default
# Istio lifts Envoy's default limits (1024 connections, requests...), which otherwise
# overflow silently under real load; DestinationRule connectionPool lowers them again.
_UNLIMITED = 4294967295


def _ads_source() -> config_source_pb2.ConfigSource:
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )


def _thresholds() -> circuit_breaker_pb2.CircuitBreakers:
    limit = wrappers_pb2.UInt32Value(value=_UNLIMITED)
    return circuit_breaker_pb2.CircuitBreakers(thresholds=[
        circuit_breaker_pb2.CircuitBreakers.Thresholds(
            max_connections=limit, max_pending_requests=limit, max_requests=limit,
            max_retries=limit, track_remaining=True,
        )
    ])


def _http2_options() -> http_protocol_options_pb2.HttpProtocolOptions:
    explicit = http_protocol_options_pb2.HttpProtocolOptions.ExplicitHttpConfig
    return http_protocol_options_pb2.HttpProtocolOptions(
        explicit_http_config=explicit(http2_protocol_options=protocol_pb2.Http2ProtocolOptions())
    )


def build_cluster(name: str, port: ServicePort) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=_ads_source(), service_name=name,
        ),
        connect_timeout=duration_pb2.Duration(seconds=CONNECT_TIMEOUT_S),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
        circuit_breakers=_thresholds(),
        common_lb_config=cluster_pb2.Cluster.CommonLbConfig(
            # Istio's choice: no panic mode, so unhealthy hosts are never used.
            healthy_panic_threshold=percent_pb2.Percent(value=0),
        ),
    )
    if port.l7 is Protocol.HTTP2:
        cluster.typed_extension_protocol_options[HTTP_PROTOCOL_OPTIONS].Pack(_http2_options())
    return cluster


def proxied_ports(service: Service) -> Iterator[ServicePort]:
    return (p for p in service.ports if p.l7 is not Protocol.UNSUPPORTED)


def build_clusters(mesh: Mesh) -> list[cluster_pb2.Cluster]:
    out = []
    for fqdn, service in mesh.services.items():
        rule = mesh.destination_rules.get(fqdn)
        for port in proxied_ports(service):
            out.append(build_cluster(cluster_name(port.port, fqdn), port))
            for subset in rule.subsets if rule else ():
                out.append(build_cluster(cluster_name(port.port, fqdn, subset.name), port))
            for pod_fqdn, _ in pod_hosts(mesh, service, port):
                out.append(build_cluster(cluster_name(port.port, pod_fqdn), port))
    return out
