"""The hand-assembled wire format equals what the generated classes serialize, for
payload sizes across every varint width of a length."""

from __future__ import annotations

import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from controlplane.xds import types, wire

SIZES = [0, 1, 100, 127, 128, 16_383, 16_384, 300_000]


def cla(size: int) -> bytes:
    return endpoint_pb2.ClusterLoadAssignment(cluster_name="x" * size).SerializeToString()


@pytest.mark.parametrize("size", SIZES)
def test_sotw_response(size: int) -> None:
    body = cla(size)
    entries = [wire.resource_entry(types.ENDPOINT, body)] * 2
    for joined in (entries, b"".join(entries)):
        data = wire.discovery_response("v1", joined, types.ENDPOINT, "n-1")
        expected = discovery_pb2.DiscoveryResponse(
            version_info="v1", type_url=types.ENDPOINT, nonce="n-1",
            resources=[any_pb2.Any(type_url=types.ENDPOINT, value=body)] * 2)
        assert discovery_pb2.DiscoveryResponse.FromString(data) == expected
        if body:  # (an empty value is written, where protobuf leaves it out)
            assert data == expected.SerializeToString(deterministic=True)


@pytest.mark.parametrize("size", SIZES)
def test_delta_entry_from_the_sotw_entry(size: int) -> None:
    body = cla(size)
    name = "n" * (size % 300)
    entry = wire.resource_entry(types.ENDPOINT, body)
    assert (wire.delta_entry_of(name, "v7", entry)
            == wire.delta_resource_entry(types.ENDPOINT, name, "v7", body))
    data = wire.delta_discovery_response("s1", [wire.delta_entry_of(name, "v7", entry)],
                                         types.ENDPOINT, ["gone"], "n-2")
    expected = discovery_pb2.DeltaDiscoveryResponse(
        system_version_info="s1", type_url=types.ENDPOINT, nonce="n-2",
        removed_resources=["gone"])
    r = expected.resources.add(name=name, version="v7")
    r.resource.Pack(endpoint_pb2.ClusterLoadAssignment.FromString(body))
    assert discovery_pb2.DeltaDiscoveryResponse.FromString(data) == expected
