"""Where a route, filter chain or cluster came from, in its metadata: Istio's key
(`istio: {config: /apis/networking.istio.io/v1/namespaces/NS/KIND/NAME}`, as istiod
writes it, so tools that read it carry over) and ours (`controlplane`: which rule, which
DestinationRule level each setting came from). Envoy ignores both; `controlplane explain`
reads them from any config dump."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2

ISTIO_KEY = "istio"
OURS_KEY = "controlplane"
VIRTUAL_SERVICE = "virtual-service"
DESTINATION_RULE = "destination-rule"


def object_metadata(kind: str, namespace: str, name: str, ours: dict[str, Any]
                    ) -> base_pb2.Metadata:
    md = base_pb2.Metadata()
    md.filter_metadata[ISTIO_KEY].update(
        {"config": f"/apis/networking.istio.io/v1/namespaces/{namespace}/{kind}/{name}"})
    if ours:
        md.filter_metadata[OURS_KEY].update(ours)
    return md
