"""An in-process ADS client that speaks exactly as Envoy does, for protocol tests that
assert on the DiscoveryResponses themselves (Contour's feature-test style)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2
from google.rpc import status_pb2

from controlplane.xds import types

METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


class AdsClient:
    def __init__(self, port: int, node_id: str, metadata: dict[str, Any] | None = None,
                 cluster: str | None = None) -> None:
        self.port = port
        self.node = base_pb2.Node(id=node_id, cluster=node_id if cluster is None else cluster)
        if metadata:
            s = struct_pb2.Struct()
            s.update(metadata)
            self.node.metadata.CopyFrom(s)
        self.first = True
        self.channel: grpc.aio.Channel | None = None
        self.call: Any = None
        # What this client wrote and read, for ControlPlane.silent to compare with what
        # the server's stream handled and wrote.
        self.written = 0
        self.received = 0

    async def open(self) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        stream = self.channel.stream_stream(
            METHOD, request_serializer=discovery_pb2.DiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DiscoveryResponse.FromString)
        self.call = stream()
        self.first = True

    async def status(self) -> tuple[grpc.StatusCode, str]:
        """How the server ended the call (waits for it to end)."""
        return await self.call.code(), await self.call.details()

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def send(self, type_url: str, names: tuple[str, ...] | list[str] = (),
                   version: str = "", nonce: str = "", error: str | None = None) -> None:
        await self._write(discovery_pb2.DiscoveryRequest(
            type_url=type_url, resource_names=list(names), version_info=version,
            response_nonce=nonce), error)

    async def _write(self, req: Any, error: str | None) -> None:
        """The node on the first request only, as Envoy does; a NACK's error_detail."""
        if self.first:
            req.node.CopyFrom(self.node)
            self.first = False
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        await self.call.write(req)
        self.written += 1

    async def recv(self, timeout: float = 3.0) -> discovery_pb2.DiscoveryResponse:
        # One read in flight at a time, kept across a timeout.
        resp = await asyncio.wait_for(asyncio.shield(self._read_task()), timeout)
        self._pending = None
        self.received += 1
        return resp

    async def ack_any(self, resp: Any) -> None:
        await self.ack(resp)

    def _read_task(self) -> asyncio.Task[Any]:
        if getattr(self, "_pending", None) is None:
            self._pending = asyncio.ensure_future(self.call.read())
        return self._pending

    async def ack(self, resp: discovery_pb2.DiscoveryResponse,
                  names: tuple[str, ...] | list[str] = ()) -> None:
        await self.send(resp.type_url, names, resp.version_info, resp.nonce)

    async def nack(self, resp: discovery_pb2.DiscoveryResponse, accepted_version: str,
                   message: str, names: tuple[str, ...] | list[str] = ()) -> None:
        await self.send(resp.type_url, names, accepted_version, resp.nonce, error=message)


def decode(resp: discovery_pb2.DiscoveryResponse) -> list[Any]:
    """The resources of a response, parsed with the generated classes."""
    for any_msg in resp.resources:
        assert any_msg.type_url == resp.type_url
    return [types.decode(a.type_url, a.value) for a in resp.resources]


# The outbound traffic policy's clusters, in every CDS answer (controlplane.translate.outbound),
# sorted as sorted() puts them before any `outbound|...` name.
CATCH_ALL_CLUSTERS = ["BlackHoleCluster", "PassthroughCluster"]


def names_of(resp: discovery_pb2.DiscoveryResponse) -> list[str]:
    return [types.resource_name(resp.type_url, m) for m in decode(resp)]


DELTA_METHOD = ("/envoy.service.discovery.v3.AggregatedDiscoveryService/"
                "DeltaAggregatedResources")


class DeltaClient(AdsClient):
    """The incremental protocol, as Envoy speaks it."""

    async def open(self) -> None:
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        stream = self.channel.stream_stream(
            DELTA_METHOD,
            request_serializer=discovery_pb2.DeltaDiscoveryRequest.SerializeToString,
            response_deserializer=discovery_pb2.DeltaDiscoveryResponse.FromString)
        self.call = stream()
        self.first = True

    async def delta(self, type_url: str, subscribe: tuple[str, ...] | list[str] = (),
                    unsubscribe: tuple[str, ...] | list[str] = (), nonce: str = "",
                    error: str | None = None,
                    initial: dict[str, str] | None = None) -> None:
        req = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe), response_nonce=nonce)
        for name, version in (initial or {}).items():
            req.initial_resource_versions[name] = version
        await self._write(req, error)

    async def ack_delta(self, resp: discovery_pb2.DeltaDiscoveryResponse) -> None:
        await self.delta(resp.type_url, nonce=resp.nonce)

    async def ack_any(self, resp: Any) -> None:
        await self.ack_delta(resp)


def delta_names(resp: discovery_pb2.DeltaDiscoveryResponse) -> list[str]:
    """Names of the resources in a delta response, checked against their payloads."""
    out = []
    for r in resp.resources:
        message = types.decode(r.resource.type_url, r.resource.value)
        assert types.resource_name(resp.type_url, message) == r.name
        assert r.version
        out.append(r.name)
    return out
