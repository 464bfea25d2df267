"""Who is asking: the parts of an Envoy node that change what it receives.

The translator reads it (the bind address of listeners, the namespace of short names)
and the ADS server makes it from a node; it lives here, below both, so neither has to
import the other.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from controlplane.model.locality import locality_of_labels
from controlplane.model.meta import DEFAULT_NAMESPACE


@dataclass(frozen=True)
class ProxyView:
    node_id: str
    cluster: str = ""
    namespace: str = DEFAULT_NAMESPACE
    instance_ips: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    build_version: str = ""
    # The workload's labels (Istio's LABELS node metadata): what `sourceLabels` and
    # workload selectors match.
    labels: frozenset[tuple[str, str]] = frozenset()
    # Where it runs, "region/zone/subzone" (model/locality.py): the node's locality, else
    # its workload's locality label. Locality load balancing orders endpoints by it.
    locality: str = ""

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


def namespace_from_id(node_id: str) -> str | None:
    """The namespace in an Istio sidecar id:
    sidecar~10.0.0.1~pod-name.namespace~namespace.svc.cluster.local"""
    parts = node_id.split("~")
    if len(parts) == 4 and "." in parts[2]:
        return parts[2].rsplit(".", 1)[1]
    return None


def proxy_view(node_id: str, cluster: str, metadata: dict[str, Any],
               build_version: str = "", locality: str = "") -> ProxyView:
    """A proxy's view from what its node says: INSTANCE_IPS (a list or a comma-separated
    string), NAMESPACE and LABELS (a map) from the metadata, else the namespace in an
    Istio node id; the locality given (the node's), else its workload's locality label,
    as Istio's agent does."""
    ips = metadata.get("INSTANCE_IPS", "")
    if isinstance(ips, list):
        ips = ",".join(str(i) for i in ips)
    namespace = metadata.get("NAMESPACE") or namespace_from_id(node_id) or DEFAULT_NAMESPACE
    labels = metadata.get("LABELS")
    label_pairs = (frozenset((str(k), str(v)) for k, v in labels.items())
                   if isinstance(labels, dict) else frozenset())
    return ProxyView(
        node_id=node_id,
        cluster=cluster,
        namespace=str(namespace),
        instance_ips=tuple(i.strip() for i in str(ips).split(",") if i.strip()),
        metadata=metadata,
        build_version=build_version,
        labels=label_pairs,
        locality=locality or locality_of_labels(label_pairs),
    )
