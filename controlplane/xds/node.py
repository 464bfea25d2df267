"""The node a stream's first request names: its limits, and the proxy's view from it."""

from __future__ import annotations

from typing import Any

import grpc
import structlog
from google.protobuf import json_format

from controlplane.model.locality import join
from controlplane.model.proxy import ProxyView, proxy_view
from controlplane.xds.clientlog import clip

log = structlog.get_logger("controlplane.xds")

# What a node may carry. An Istio sidecar's id is about 100 characters, its metadata a few
# kB, and Envoy's whole node (its extension list included) some 20 kB; these leave wide
# room and keep one proxy's row and log lines small.
MAX_NODE_BYTES = 256 * 1024  # the serialized Node
MAX_NODE_ID = 1024  # characters
MAX_NODE_CLUSTER = 1024  # characters
MAX_NODE_METADATA_BYTES = 64 * 1024  # serialized


class StreamRejected(Exception):
    """Ends the stream with this gRPC status: the request can never be served."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _reject(stream_id: int, peer: str, field_name: str, size: int, limit: int, unit: str,
            value: str = "") -> None:
    details = f"{field_name} is {size} {unit}, over the limit of {limit} {unit}"
    log.warning("node_rejected", stream=stream_id, peer=peer, field=field_name,
                size=size, limit=limit, value=clip(value) if value else None)
    raise StreamRejected(grpc.StatusCode.INVALID_ARGUMENT, details)


def check_node(node: Any, size: int, stream_id: int, peer: str) -> None:
    """Refuse a node over its limits (MAX_NODE_*), before anything records or logs it:
    the field at fault if one is, else the node as a whole. A 15 MB node id made every
    `proxy-status` fail and every log line of the stream 15 MB."""
    if len(node.id) > MAX_NODE_ID:
        _reject(stream_id, peer, "node.id", len(node.id), MAX_NODE_ID, "characters", node.id)
    if len(node.cluster) > MAX_NODE_CLUSTER:
        _reject(stream_id, peer, "node.cluster", len(node.cluster), MAX_NODE_CLUSTER,
                "characters", node.cluster)
    if node.HasField("metadata") and (
            metadata := node.metadata.ByteSize()) > MAX_NODE_METADATA_BYTES:
        _reject(stream_id, peer, "node.metadata", metadata, MAX_NODE_METADATA_BYTES, "bytes")
    if size > MAX_NODE_BYTES:
        _reject(stream_id, peer, "node", size, MAX_NODE_BYTES, "bytes")


def proxy_from_node(node: Any) -> ProxyView:
    """From an envoy.config.core.v3.Node message."""
    metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    version = ""
    if node.HasField("user_agent_build_version"):
        v = node.user_agent_build_version.version
        version = f"{v.major_number}.{v.minor_number}.{v.patch}"
    where = node.locality
    return proxy_view(node.id, node.cluster, metadata, version,
                      join(where.region, where.zone, where.sub_zone))
