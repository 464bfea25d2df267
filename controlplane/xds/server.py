"""The ADS server: one stream per connection, SotW (sotw.py) or Delta (delta.py), over
what every stream shares (stream.Shared: the cache, the callbacks, flow control).

The package's layout follows go-control-plane's server: the stream and its per-type
state (stream.py, state.py), each protocol in its own module, flow control (flow.py),
the node's limits (node.py), and this module wiring them to gRPC. Stream events reach
the rest of the control plane only through `callbacks.StreamCallbacks`.
"""

from __future__ import annotations

from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.xds.cache import SnapshotCache
from controlplane.xds.callbacks import StreamCallbacks
from controlplane.xds.delta import DeltaStream
from controlplane.xds.flow import Deadlines, LargeResponses
from controlplane.xds.requests import SotwRequest
from controlplane.xds.sotw import SotwStream
from controlplane.xds.stream import Shared, Stream
from controlplane.xds.subscriptions import Subscriptions

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


class AdsServer:
    def __init__(self, cache: SnapshotCache, callbacks: StreamCallbacks,
                 answer_timeout: float = 5.0, large_responses: int = 128) -> None:
        self.cache = cache
        self.large = LargeResponses(large_responses)
        # Streams look again once an answer is overdue, whatever else happens.
        self.shared = Shared(cache=cache, callbacks=callbacks, answer_timeout=answer_timeout,
                             large=self.large, deadlines=Deadlines(),
                             subscriptions=Subscriptions(), junk_log_interval=60.0)
        # Open streams by id: for tests and tools that must see a stream's state; the
        # admin surfaces read the sync registry instead.
        self.streams: dict[int, Stream[Any]] = {}

    async def _serve(self, stream: Stream[Any]) -> None:
        self.streams[stream.id] = stream
        try:
            await stream.run()
        finally:
            self.streams.pop(stream.id, None)

    async def _sotw(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        await self._serve(SotwStream(self.shared, context))  # reads with context.read()

    async def _delta(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        await self._serve(DeltaStream(self.shared, context))

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(ADS_SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._sotw,
                request_deserializer=SotwRequest,  # read lazily: see requests.py
                response_serializer=None,  # responses are assembled as bytes (wire.py)
            ),
            "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                self._delta,
                request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
                response_serializer=None,
            ),
        })


# gRPC sets SO_REUSEPORT on its listeners by default: a second control plane started on
# the same address then binds too, and the kernel splits new connections between the two.
# A port in use must be an error instead.
EXCLUSIVE_PORT = (("grpc.so_reuseport", 0),)


async def start_grpc_server(handlers: list[grpc.GenericRpcHandler], address: str
                            ) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[
        ("grpc.max_send_message_length", 256 * 1024 * 1024),
        ("grpc.max_receive_message_length", 16 * 1024 * 1024),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        # Streams that arrived but that grpc.aio has not picked up yet (it takes one per
        # event-loop round trip) wait in gRPC core's pending queue, which by default
        # refuses new ones at random past 1,000 waiting (all past 3,000) and cancels those
        # waiting over 30 s. When thousands of proxies connect at once (a restart, a
        # connect storm) that refuses most of them; each retries, and the retries keep
        # the queue full: 5,000 proxies never all got back. Queue them instead.
        ("grpc.server.max_pending_requests", 1 << 20),
        ("grpc.server.max_pending_requests_hard_limit", 1 << 20),
        ("grpc.server_max_unrequested_time_in_server", 24 * 3600),
        *EXCLUSIVE_PORT,
    ])
    server.add_generic_rpc_handlers(handlers)
    port = add_port(server, address)
    await server.start()
    return server, port


def add_port(server: grpc.aio.Server, address: str) -> int:
    """Bind `address` (port 0: any free one); the port bound. A failed bind raises
    RuntimeError, as grpc does (older grpc returned 0 instead)."""
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}")
    return port
