"""Small Envoy messages several translators build alike."""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2
from google.protobuf import duration_pb2


def duration(seconds: float) -> duration_pb2.Duration:
    """Rounded to the nanosecond, as Istio's durations are."""
    d = duration_pb2.Duration()
    d.FromNanoseconds(round(seconds * 1e9))
    return d


def ads_source() -> config_source_pb2.ConfigSource:
    """Fetched over the proxy's ADS stream (EDS of a cluster, RDS of a listener)."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )
