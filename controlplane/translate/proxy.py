"""Who is asking: the parts of an Envoy node that change what it receives."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format

from controlplane.model.meta import DEFAULT_NAMESPACE


@dataclass(frozen=True)
class ProxyView:
    node_id: str
    cluster: str = ""
    namespace: str = DEFAULT_NAMESPACE
    instance_ips: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    build_version: str = ""

    @property
    def bind_ip(self) -> str:
        """Outbound listeners bind here: the first IPv4 instance IP, as several sidecars
        can then share one host on distinct loopback addresses; else all addresses."""
        for ip in self.instance_ips:
            try:
                if ipaddress.ip_address(ip).version == 4:
                    return ip
            except ValueError:
                continue
        return "0.0.0.0"


def _namespace_from_id(node_id: str) -> str | None:
    # Istio's sidecar ids: sidecar~10.0.0.1~pod-name.namespace~namespace.svc.cluster.local
    parts = node_id.split("~")
    if len(parts) == 4 and "." in parts[2]:
        return parts[2].rsplit(".", 1)[1]
    return None


def proxy_from_node(node: Any) -> ProxyView:
    """From an envoy.config.core.v3.Node message."""
    metadata = json_format.MessageToDict(node.metadata) if node.HasField("metadata") else {}
    ips = metadata.get("INSTANCE_IPS", "")
    if isinstance(ips, list):
        ips = ",".join(str(i) for i in ips)
    namespace = (metadata.get("NAMESPACE") or _namespace_from_id(node.id)
                 or DEFAULT_NAMESPACE)
    version = ""
    if node.HasField("user_agent_build_version"):
        v = node.user_agent_build_version.version
        version = f"{v.major_number}.{v.minor_number}.{v.patch}"
    return ProxyView(
        node_id=node.id,
        cluster=node.cluster,
        namespace=str(namespace),
        instance_ips=tuple(i.strip() for i in str(ips).split(",") if i.strip()),
        metadata=metadata,
        build_version=version,
    )
