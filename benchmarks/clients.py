"""The simulated proxy fleet: many ADS streams per process, each speaking as Envoy does.

One process runs `--count` proxies, each on its own gRPC channel and TCP connection (a
local subchannel pool, as every Envoy has its own connection), all on one asyncio loop.
The driver (benchmarks/run.py) starts several such processes and talks to each over
stdin/stdout, one JSON object per line:

    {"cmd": "wait_synced", "timeout": 60}       -> {"synced": n, "times": [...], ...}
    {"cmd": "arm", "type": "EDS", "needle": s}  -> {"ok": true}
    {"cmd": "collect", "timeout": 10}           -> {"acks": [t...], "missing": n, ...}
    {"cmd": "storm", "at": t0, "timeout": 60}   -> {"times": [...], "missing": n}
    {"cmd": "quit"}

Every time is CLOCK_MONOTONIC, which on Linux is one clock for every process, so the
driver compares them with the server's.

A proxy (state of the world, `--mode sotw`), as Envoy:
  CDS request (wildcard) -> on each CDS response: if the EDS names changed or any EDS
  cluster changed, an EDS request for all EDS names with the *last EDS version and
  nonce* (Envoy's re-request after a cluster change), then the CDS ACK;
  first EDS response -> ACK, then the LDS request (wildcard);
  each LDS response -> RDS request for the route names of its listeners when they
  changed, then the LDS ACK; each RDS/EDS response -> ACK with the subscribed names.
`--mode delta` speaks DeltaAggregatedResources the same way and stops with a clear
error when the server answers UNIMPLEMENTED.

"Armed" proxies time the ACK of the first response of the armed type whose bytes
contain the needle (the change's new IP or route token, see benchmarks/mesh.py); no
decoding is needed to tell the response carrying the change.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import time
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from benchmarks.control import commands, reply
from controlplane.translate import route_names
from controlplane.xds import types

SERVICE = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"
SOTW = SERVICE + "StreamAggregatedResources"
DELTA = SERVICE + "DeltaAggregatedResources"
CDS, EDS, LDS, RDS = types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),  # one connection per proxy, as Envoy
    ("grpc.max_receive_message_length", 512 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def now() -> float:
    return time.clock_gettime(time.CLOCK_MONOTONIC)


class Fatal(Exception):
    pass


class Parsed:
    """Per-process memo of what a version of CDS/LDS means: every proxy of the process
    gets the same bytes, decoding them once is enough (this keeps the fleet cheap so
    the server gets the CPU)."""

    def __init__(self) -> None:
        self.cds: dict[str, tuple[tuple[str, ...], dict[str, bytes]]] = {}
        self.lds: dict[str, tuple[str, ...]] = {}
        self.delta_cds: dict[tuple[str, str], str] = {}
        self._wire: dict[int, tuple[tuple[str, ...], bytes]] = {}

    def names_wire(self, names: tuple[str, ...]) -> bytes:
        """`resource_names` encoded, once per tuple: every proxy of the process repeats
        the same 3,000 EDS names in each ACK, as Envoy does, and encoding them anew per
        request cost the fleet the CPU the server should get."""
        held = self._wire.get(id(names))
        if held is None or held[0] is not names:
            held = self._wire[id(names)] = (names, discovery_pb2.DiscoveryRequest(
                resource_names=names).SerializeToString())
        return held[1]

    def clusters(self, resp: Any) -> tuple[tuple[str, ...], dict[str, bytes]]:
        key = resp.version_info
        hit = self.cds.get(key)
        if hit is None:
            eds: list[str] = []
            digests: dict[str, bytes] = {}
            for a in resp.resources:
                body = a.resource.value if hasattr(a, "resource") else a.value
                c = cluster_pb2.Cluster.FromString(body)
                digests[c.name] = hashlib.blake2b(body, digest_size=8).digest()
                if c.type == cluster_pb2.Cluster.EDS:
                    eds.append(c.eds_cluster_config.service_name or c.name)
            hit = (tuple(sorted(eds)), digests)
            if len(self.cds) > 64:
                self.cds.clear()
            self.cds[key] = hit
        return hit

    def delta_cluster(self, r: Any) -> str:
        """A Delta resource's EDS service name ("" for other cluster types), decoded once
        per name and version in the process, as `clusters` does per CDS version."""
        key = (r.name, r.version)
        hit = self.delta_cds.get(key)
        if hit is None:
            c = cluster_pb2.Cluster.FromString(r.resource.value)
            hit = ((c.eds_cluster_config.service_name or c.name)
                   if c.type == cluster_pb2.Cluster.EDS else "")
            if len(self.delta_cds) > 100_000:
                self.delta_cds.clear()
            self.delta_cds[key] = hit
        return hit

    def routes(self, resp: Any) -> tuple[str, ...]:
        key = resp.version_info
        hit = self.lds.get(key)
        if hit is None:
            names: set[str] = set()
            for a in resp.resources:
                body = a.resource.value if hasattr(a, "resource") else a.value
                names.update(route_names(listener_pb2.Listener.FromString(body)))
            hit = tuple(sorted(names))
            if len(self.lds) > 64:
                self.lds.clear()
            self.lds[key] = hit
        return hit


class Proxy:
    def __init__(self, fleet: Fleet, index: int) -> None:
        self.fleet = fleet
        self.index = index
        self.namespace = f"ns-{index % fleet.namespaces}"
        self.node = base_pb2.Node(id=f"sidecar~0.0.0.0~proxy-{index}.{self.namespace}~"
                                     f"{self.namespace}.svc.cluster.local",
                                  cluster=f"proxy-{index}")
        md = struct_pb2.Struct()
        md.update({"NAMESPACE": self.namespace})
        self.node.metadata.CopyFrom(md)
        self.channel: grpc.aio.Channel | None = None
        self.task: asyncio.Task[None] | None = None
        self.reset()
        self.armed = False
        self.arm_type = ""
        self.needle = b""
        self.acked_at: float | None = None
        self.bytes = 0
        self.responses = 0

    def reset(self) -> None:
        self.synced_at: float | None = None
        self.acked_types: set[str] = set()
        self.version: dict[str, str] = {}  # last ACKed version per type
        self.nonce: dict[str, str] = {}  # last response nonce per type
        self.eds_names: tuple[str, ...] = ()
        self.rds_names: tuple[str, ...] = ()
        self.cluster_digests: dict[str, bytes] = {}
        self.lds_requested = False
        self.first = True
        self.error: str | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self.reset()
        self.task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        if self.channel is not None:
            await self.channel.close(grace=None)
            self.channel = None

    async def run(self) -> None:
        """Connect and converse; on a failed stream reconnect with jittered backoff (0.25 s
        doubling to 4 s), as Envoy does, until stopped. UNIMPLEMENTED is fatal."""
        backoff = 0.25
        while True:
            self.channel = grpc.aio.insecure_channel(self.fleet.target,
                                                     options=CHANNEL_OPTIONS)
            try:
                if self.fleet.mode == "delta":
                    await self._run_delta(self.channel)
                else:
                    await self._run_sotw(self.channel)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    self.fleet.fatal = (
                        f"the server answered UNIMPLEMENTED to {self.fleet.mode} ADS "
                        f"({exc.details()}): it does not serve "
                        f"{'DeltaAggregatedResources' if self.fleet.mode == 'delta' else 'SotW'}"
                        f"; use --mode sotw")
                    return
                self.error = f"{exc.code().name}: {exc.details()}"
            except Exception as exc:  # reported to the driver
                self.error = f"{type(exc).__name__}: {exc}"
            self.fleet.reconnects += 1
            channel, self.channel = self.channel, None
            await channel.close(grace=None)
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(4.0, backoff * 2)
            error = self.error
            self.reset()
            self.error = error  # kept for the report until the proxy syncs again

    # -- timing --------------------------------------------------------------------------
    def _seen(self, type_url: str, raw: bytes) -> bool:
        if self.armed and type_url == self.arm_type:
            self.bytes += len(raw)
            self.responses += 1
            return self.acked_at is None and self.needle in raw
        return False

    def _acked(self, type_url: str) -> None:
        self.acked_types.add(type_url)
        if self.synced_at is None and len(self.acked_types) == 4:
            self.synced_at = now()
            self.error = None

    # -- state of the world ----------------------------------------------------------------
    async def _run_sotw(self, channel: grpc.aio.Channel) -> None:
        call = channel.stream_stream(SOTW, request_serializer=None,
                                     response_deserializer=None)()

        async def send(type_url: str, names: tuple[str, ...] = (), version: str = "",
                       nonce: str = "") -> None:
            # The bytes Envoy's serializer writes (fields in number order), assembled from
            # the head and the process's encoded names.
            head = discovery_pb2.DiscoveryRequest(version_info=version)
            if self.first:
                head.node.CopyFrom(self.node)
                self.first = False
            tail = discovery_pb2.DiscoveryRequest(type_url=type_url, response_nonce=nonce)
            await call.write(head.SerializeToString() + self.fleet.parsed.names_wire(names)
                             + tail.SerializeToString())

        await send(CDS)
        parsed = self.fleet.parsed
        while True:
            raw = await call.read()
            if raw is grpc.aio.EOF:
                self.error = self.error or "stream ended by the server"
                return
            resp = discovery_pb2.DiscoveryResponse.FromString(raw)
            t = resp.type_url
            timed = self._seen(t, raw)
            v, n = resp.version_info, resp.nonce
            if t == CDS:
                eds, digests = parsed.clusters(resp)
                changed = eds != self.eds_names or any(
                    self.cluster_digests.get(name) != d for name, d in digests.items())
                self.cluster_digests = digests
                if changed:  # (re)subscribe before the ACK, with the last EDS version/nonce
                    self.eds_names = eds
                    await send(EDS, eds, self.version.get(EDS, ""), self.nonce.get(EDS, ""))
                await send(CDS, (), v, n)
            elif t == EDS:
                await send(EDS, self.eds_names, v, n)
                if not self.lds_requested:
                    self.lds_requested = True
                    await send(LDS)
            elif t == LDS:
                names = parsed.routes(resp)
                if names != self.rds_names:
                    self.rds_names = names
                    await send(RDS, names, self.version.get(RDS, ""), self.nonce.get(RDS, ""))
                await send(LDS, (), v, n)
            elif t == RDS:
                await send(RDS, self.rds_names, v, n)
            else:
                continue
            self.version[t], self.nonce[t] = v, n
            self._acked(t)
            if timed:
                self.acked_at = now()

    # -- incremental (delta) -------------------------------------------------------------
    async def _run_delta(self, channel: grpc.aio.Channel) -> None:
        call = channel.stream_stream(DELTA, request_serializer=None,
                                     response_deserializer=None)()

        async def send(type_url: str, subscribe: tuple[str, ...] = (),
                       unsubscribe: tuple[str, ...] = (), nonce: str = "") -> None:
            req = discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, resource_names_subscribe=list(subscribe),
                resource_names_unsubscribe=list(unsubscribe), response_nonce=nonce)
            if self.first:
                req.node.CopyFrom(self.node)
                self.first = False
            await call.write(req.SerializeToString())

        clusters: dict[str, str] = {}  # name -> its EDS service name ("": not EDS)
        parsed = self.fleet.parsed
        await send(CDS)
        while True:
            raw = await call.read()
            if raw is grpc.aio.EOF:
                self.error = self.error or "stream ended by the server"
                return
            resp = discovery_pb2.DeltaDiscoveryResponse.FromString(raw)
            t = resp.type_url
            timed = self._seen(t, raw)
            n = resp.nonce
            if t == CDS:
                for name in resp.removed_resources:
                    clusters.pop(name, None)
                for r in resp.resources:
                    clusters[r.name] = parsed.delta_cluster(r)
                eds = tuple(sorted(v for v in clusters.values() if v))
                added = tuple(sorted(set(eds) - set(self.eds_names)))
                gone = tuple(sorted(set(self.eds_names) - set(eds)))
                self.eds_names = eds
                if added or gone:
                    await send(EDS, added, gone)
                await send(CDS, nonce=n)
            elif t == EDS:
                await send(EDS, nonce=n)
                if not self.lds_requested:
                    self.lds_requested = True
                    await send(LDS)
            elif t == LDS:
                names = set(self.rds_names)
                new: set[str] = set()
                for r in resp.resources:
                    new.update(route_names(listener_pb2.Listener.FromString(r.resource.value)))
                names = names | new  # listeners removed are not tracked here
                added = tuple(sorted(names - set(self.rds_names)))
                self.rds_names = tuple(sorted(names))
                if added:
                    await send(RDS, added)
                await send(LDS, nonce=n)
            elif t == RDS:
                await send(RDS, nonce=n)
            else:
                continue
            self.nonce[t] = n
            self._acked(t)
            if timed:
                self.acked_at = now()


class Fleet:
    def __init__(self, target: str, count: int, first_index: int, namespaces: int,
                 mode: str) -> None:
        self.target = target
        self.mode = mode
        self.namespaces = namespaces
        self.parsed = Parsed()
        self.fatal: str | None = None
        self.reconnects = 0
        self.proxies = [Proxy(self, first_index + i) for i in range(count)]

    def start(self) -> None:
        for p in self.proxies:
            p.start()

    async def wait(self, done: Any, timeout: float) -> None:
        deadline = now() + timeout
        while not done() and now() < deadline and self.fatal is None:
            await asyncio.sleep(0.005)

    def errors(self) -> list[str]:
        return sorted({p.error for p in self.proxies if p.error})[:5]

    async def wait_synced(self, timeout: float) -> dict[str, Any]:
        await self.wait(lambda: all(p.synced_at is not None for p in self.proxies), timeout)
        times = [p.synced_at for p in self.proxies if p.synced_at is not None]
        return {"synced": len(times), "times": times, "errors": self.errors(),
                "reconnects": self.reconnects, "fatal": self.fatal}

    def arm(self, type_short: str, needle: str) -> dict[str, Any]:
        for p in self.proxies:
            p.armed, p.arm_type, p.needle = True, types.BY_SHORT[type_short], needle.encode()
            p.acked_at, p.bytes, p.responses = None, 0, 0
        return {"ok": True}

    async def collect(self, timeout: float, settle: float) -> dict[str, Any]:
        await self.wait(lambda: all(p.acked_at is not None for p in self.proxies), timeout)
        await asyncio.sleep(settle)  # responses after the timed one still count as bytes
        acks = [p.acked_at for p in self.proxies if p.acked_at is not None]
        out = {"acks": acks, "missing": len(self.proxies) - len(acks),
               "bytes": sum(p.bytes for p in self.proxies),
               "responses": sum(p.responses for p in self.proxies),
               "errors": self.errors(), "fatal": self.fatal}
        for p in self.proxies:
            p.armed = False
        return out

    async def storm(self, at: float, timeout: float) -> dict[str, Any]:
        await asyncio.gather(*(p.stop() for p in self.proxies))
        await asyncio.sleep(max(0.0, at - now()))
        self.start()
        return await self.wait_synced(timeout)

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.proxies))


async def serve(fleet: Fleet) -> None:
    fleet.start()
    reply({"ready": True, "pid": os.getpid(), "count": len(fleet.proxies)})
    try:
        async for cmd in commands():
            c = cmd["cmd"]
            if c == "wait_synced":
                reply(await fleet.wait_synced(cmd.get("timeout", 60)))
            elif c == "arm":
                reply(fleet.arm(cmd["type"], cmd["needle"]))
            elif c == "collect":
                reply(await fleet.collect(cmd.get("timeout", 10), cmd.get("settle", 0.2)))
            elif c == "storm":
                reply(await fleet.storm(cmd["at"], cmd.get("timeout", 60)))
            else:
                reply({"error": f"unknown command {c!r}"})
    finally:
        await fleet.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, help="HOST:PORT of the ADS server (loopback)")
    p.add_argument("--count", type=int, default=250)
    p.add_argument("--first-index", type=int, default=0)
    p.add_argument("--namespaces", type=int, default=10)
    p.add_argument("--mode", choices=["sotw", "delta"], default="sotw")
    a = p.parse_args(argv)
    host = a.target.rsplit(":", 1)[0]
    if not host.startswith("127."):
        p.error("the benchmark talks to loopback (127.0.0.0/8) only")
    asyncio.run(serve(Fleet(a.target, a.count, a.first_index, a.namespaces, a.mode)))


if __name__ == "__main__":
    main()
