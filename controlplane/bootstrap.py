"""The Envoy bootstrap a sidecar needs to reach this control plane over ADS."""

from __future__ import annotations

from typing import Any


def split_address(address: str, default_port: int) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, default_port
    return host.strip("[]"), int(port)


def bootstrap(*, node_id: str, cluster: str = "", xds_address: str = "127.0.0.1:15010",
              admin_address: str = "127.0.0.1:15000", instance_ip: str = "",
              namespace: str = "", delta: bool = False) -> dict[str, Any]:
    xds_host, xds_port = split_address(xds_address, 15010)
    admin_host, admin_port = split_address(admin_address, 15000)
    metadata: dict[str, Any] = {}
    if instance_ip:
        metadata["INSTANCE_IPS"] = instance_ip
    if namespace:
        metadata["NAMESPACE"] = namespace
    ads_source = {"ads": {}, "resource_api_version": "V3"}
    return {
        "node": {"id": node_id, "cluster": cluster or node_id, "metadata": metadata},
        "admin": {"address": {"socket_address": {"address": admin_host,
                                                 "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                "set_node_on_first_message_only": True,
            },
            "cds_config": ads_source,
            "lds_config": ads_source,
        },
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
