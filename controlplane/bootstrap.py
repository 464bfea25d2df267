"""The Envoy bootstrap a sidecar needs to reach this control plane over ADS."""

from __future__ import annotations

from typing import Any

from controlplane.model.locality import split
from controlplane.model.re2check import ENVOY_MAX_PROGRAM_SIZE as RE2_MAX_PROGRAM_SIZE

# Reconnect backoff for the ADS stream (see the bootstrap's ads_config).
XDS_RETRY_BASE = "0.25s"
XDS_RETRY_MAX = "1s"


# Istio's runtime value for RE2's program-size limit (Envoy's default is 100, which
# refuses regexes Istio accepts, such as `[0-9]{200}`); the constraint check assumes it
# (controlplane/model/re2check.py). Tests that validate resources offline use it too.
SIDECAR_RUNTIME: dict[str, Any] = {"layers": [
    {"name": "static", "static_layer": {
        "re2.max_program_size.error_level": RE2_MAX_PROGRAM_SIZE}},
    {"name": "admin", "admin_layer": {}},
]}


def split_address(address: str, default_port: int) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, default_port
    return host.strip("[]"), int(port)


def bootstrap(*, node_id: str, cluster: str = "", xds_address: str = "127.0.0.1:15010",
              admin_address: str = "127.0.0.1:15000", instance_ip: str = "",
              namespace: str = "", delta: bool = False, locality: str = "",
              labels: dict[str, str] | None = None) -> dict[str, Any]:
    xds_host, xds_port = split_address(xds_address, 15010)
    admin_host, admin_port = split_address(admin_address, 15000)
    metadata: dict[str, Any] = {}
    if instance_ip:
        metadata["INSTANCE_IPS"] = instance_ip
    if namespace:
        metadata["NAMESPACE"] = namespace
    if labels:
        # Istio's node metadata: what sourceLabels and Sidecar selectors match.
        metadata["LABELS"] = dict(labels)
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    node: dict[str, Any] = {"id": node_id, "cluster": cluster or node_id, "metadata": metadata}
    if locality:  # "region/zone/subzone": what locality load balancing prefers
        region, zone, subzone = split(locality)
        node["locality"] = {k: v for k, v in (("region", region), ("zone", zone),
                                              ("sub_zone", subzone)) if v}
    return {
        "node": node,
        "admin": {"address": {"socket_address": {"address": admin_host,
                                                 "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {
                    "cluster_name": "xds-grpc",
                    # Envoy's default for a lost xDS stream is a fully jittered backoff
                    # from 0.5 s doubling up to 30 s: after a 10 s control plane outage
                    # proxies came back 1-26 s after it returned. Capped at 1 s, all
                    # were back within 0.7 s (benchmarks/e2e_latency.py); the jitter still
                    # spreads a fleet's reconnects over that second.
                    "retry_policy": {"retry_back_off": {"base_interval": XDS_RETRY_BASE,
                                                        "max_interval": XDS_RETRY_MAX}},
                }}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": ads_source,
            "lds_config": ads_source,
        },
        "layered_runtime": SIDECAR_RUNTIME,
        "static_resources": {
            "clusters": [{
                "name": "xds-grpc",
                "type": "STRICT_DNS",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": "xds-grpc",
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                        "socket_address": {"address": xds_host, "port_value": xds_port},
                    }}}]}],
                },
                # ADS is gRPC: without HTTP/2 to the control plane the stream never opens.
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/"
                                 "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {
                            "connection_keepalive": {"interval": "30s", "timeout": "5s"},
                        }},
                    },
                },
            }],
        },
    }
