"""The floor: a bare grpc.aio ADS server that pushes pre-serialized bytes.

It serves the very resources our control plane built (a dump of its snapshots, see
benchmarks/snapshot.py), assembled once per state into DiscoveryResponse bytes with the
project's wire code, and does the least a server can do: the first request of a type is
answered with everything of that type; ACKs, NACKs and re-requests are read and ignored;
on a trigger it queues, for every stream, the response with just the resources that
changed (what our server sends too), the same bytes for every stream. No translation,
no per-stream state beyond the queue, no ordering rules: the lower bound of pushing
these bytes over gRPC in Python.

Commands on stdin (JSON lines): {"cmd": "state", "k": k} -> {"t": CLOCK_MONOTONIC at
receipt}; {"cmd": "quit"}.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

import grpc

from benchmarks.control import commands, reply
from benchmarks.snapshot import SHARED_GROUP, load
from controlplane.xds import types, wire
from controlplane.xds.requests import SotwRequest
from controlplane.xds.server import ADS_SERVICE, start_grpc_server


class Responses:
    def __init__(self, dump: Path) -> None:
        self.states = load(dump)
        self._full: dict[tuple[int, str, str], bytes] = {}
        self._delta: dict[tuple[int, str, str], bytes | None] = {}

    def _group(self, short: str, group: str) -> str:
        return group if short == "RDS" else SHARED_GROUP

    def full(self, k: int, short: str, group: str) -> bytes:
        g = self._group(short, group)
        key = (k, short, g)
        if key not in self._full:
            version, named = self.states[k][short][g]
            t = types.BY_SHORT[short]
            self._full[key] = wire.discovery_response(
                version, [wire.resource_entry(t, named[n]) for n in sorted(named)], t,
                f"floor-{k}-{short}")
        return self._full[key]

    def delta(self, k: int, short: str, group: str) -> bytes | None:
        """The response carrying state k's changes over k-1, or None when unchanged."""
        g = self._group(short, group)
        key = (k, short, g)
        if key not in self._delta:
            version, named = self.states[k][short][g]
            old_version, old = self.states[k - 1][short][g]
            t = types.BY_SHORT[short]
            if version == old_version:
                out = None
            elif t in types.WILDCARD_TYPES:
                out = self.full(k, short, g)
            else:
                changed = [n for n in sorted(named) if old.get(n) != named[n]]
                out = wire.discovery_response(
                    version, [wire.resource_entry(t, named[n]) for n in changed], t,
                    f"floor-{k}-{short}")
            self._delta[key] = out
        return self._delta[key]


class FloorStream:
    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self.context = context
        self.group = "default"
        self.requested: set[str] = set()
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def write_loop(self) -> None:
        while True:
            data = await self.queue.get()
            await self.context.write(data)


class Floor:
    def __init__(self, responses: Responses) -> None:
        self.responses = responses
        self.current = 0
        self.streams: set[FloorStream] = set()

    async def ads(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        stream = FloorStream(context)
        self.streams.add(stream)
        writer = asyncio.create_task(stream.write_loop())
        try:
            # context.read(), as ours reads: grpc.aio's request iterator would keep each
            # stream's last 140 kB ACK until the next one.
            while (req := await context.read()) is not grpc.aio.EOF:
                node = req.node()
                if node is not None:
                    ns = node.metadata.fields.get("NAMESPACE")
                    if ns is not None:
                        stream.group = ns.string_value
                short = types.short(req.type_url)
                if short not in stream.requested and short in types.BY_SHORT:
                    stream.requested.add(short)
                    stream.queue.put_nowait(
                        self.responses.full(self.current, short, stream.group))
                del req
        finally:
            self.streams.discard(stream)
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    def trigger(self, k: int) -> None:
        self.current = k
        for stream in self.streams:
            for short in types.BY_SHORT:
                if short in stream.requested:
                    data = self.responses.delta(k, short, stream.group)
                    if data is not None:
                        stream.queue.put_nowait(data)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(ADS_SERVICE, {
            "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                # The head alone (type, nonce, node), as ours reads it: a floor that
                # parsed every ACK's 3,000 names would flatter the ratio.
                self.ads, request_deserializer=SotwRequest,
                response_serializer=None),
        })


async def serve(dump: Path) -> None:
    floor = Floor(Responses(dump))
    server, port = await start_grpc_server([floor.handler()], "127.0.0.1:0")
    reply({"ready": True, "port": port, "pid": os.getpid()})
    try:
        async for cmd in commands():
            if cmd["cmd"] == "state":
                t = time.monotonic()
                floor.trigger(cmd["k"])
                reply({"t": t})
            else:
                reply({"error": f"unknown command {cmd['cmd']!r}"})
    finally:
        await server.stop(grace=0.2)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dump", type=Path, required=True, help="from benchmarks.snapshot")
    a = p.parse_args(argv)
    asyncio.run(serve(a.dump))


if __name__ == "__main__":
    main()
