"""Envoy's slow start from a DestinationRule's `warmup` (or `warmupDurationSecs`): a new
endpoint's share of requests grows over the window instead of starting at full weight,
as istiod configures it, for round robin and least request (Envoy has it for no other
policy)."""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.type.v3 import percent_pb2

from controlplane.model.destination_rule import Warmup
from controlplane.translate.protos import duration

# Envoy reads the aggression from the runtime under this key when the layer sets it; the
# sidecar bootstrap never does, so the DestinationRule's value always holds.
AGGRESSION_RUNTIME_KEY = "controlplane.slow_start.aggression"


def slow_start_config(warmup: Warmup) -> cluster_pb2.Cluster.SlowStartConfig:
    out = cluster_pb2.Cluster.SlowStartConfig(slow_start_window=duration(warmup.duration))
    if warmup.aggression is not None:
        out.aggression.CopyFrom(base_pb2.RuntimeDouble(default_value=warmup.aggression,
                                                       runtime_key=AGGRESSION_RUNTIME_KEY))
    if warmup.minimum_percent is not None:
        out.min_weight_percent.CopyFrom(percent_pb2.Percent(value=warmup.minimum_percent))
    return out


def apply_slow_start(cluster: cluster_pb2.Cluster, warmup: Warmup | None) -> None:
    """Sets the slow start of a ROUND_ROBIN or LEAST_REQUEST cluster; others unchanged."""
    if warmup is None:
        return
    if cluster.lb_policy == cluster_pb2.Cluster.ROUND_ROBIN:
        cluster.round_robin_lb_config.slow_start_config.CopyFrom(slow_start_config(warmup))
    elif cluster.lb_policy == cluster_pb2.Cluster.LEAST_REQUEST:
        cluster.least_request_lb_config.slow_start_config.CopyFrom(slow_start_config(warmup))
