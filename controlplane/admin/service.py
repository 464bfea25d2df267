"""The admin gRPC API (protos/controlplane/admin/v1/admin.proto)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from controlplane.admin import views
from controlplane.admin.v1 import admin_pb2, admin_pb2_grpc
from controlplane.status.sync import ProxySync, SyncRegistry
from controlplane.store import Store
from controlplane.xds.cache import SnapshotCache


def newest(registry: SyncRegistry, node_id: str) -> ProxySync | None:
    """The newest stream of a node: during a reconnect the old one may linger briefly."""
    found = registry.by_node(node_id)
    return max(found, key=lambda p: p.stream_id) if found else None


class AdminService(admin_pb2_grpc.AdminServicer):
    WATCH_QUEUE = 10_000  # events a slow watcher may fall behind before losing some

    def __init__(self, registry: SyncRegistry, cache: SnapshotCache,
                 store: Store | None = None) -> None:
        self.registry = registry
        self.cache = cache
        self.store = store

    async def ListProxies(self, request: admin_pb2.ListProxiesRequest,
                          context: grpc.aio.ServicerContext) -> admin_pb2.ListProxiesResponse:
        proxies = sorted(self.registry.proxies.values(), key=lambda p: (p.node_id, p.stream_id))
        rejected = [admin_pb2.RejectedObject(object=str(r.key), by=r.by, reason=r.reason,
                                             serving_last_good=r.serving is not None)
                    for r in (self.store.rejections.values() if self.store else ())]
        return admin_pb2.ListProxiesResponse(
            proxies=[views.proxy_status(p, self.registry) for p in proxies],
            rejected=rejected)

    async def GetProxy(self, request: admin_pb2.GetProxyRequest,
                       context: grpc.aio.ServicerContext) -> admin_pb2.ProxyDetail:
        proxy = newest(self.registry, request.node_id)
        if proxy is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no proxy with node id {request.node_id!r} is connected")
        assert proxy is not None
        return admin_pb2.ProxyDetail(
            status=views.proxy_status(proxy, self.registry),
            acked_resources=views.as_any(views.acked_resources(proxy)),
            current_resources=views.as_any(views.current(self.cache.snapshot, proxy)[0]))

    async def WatchSync(self, request: admin_pb2.WatchSyncRequest,
                        context: grpc.aio.ServicerContext) -> AsyncIterator[admin_pb2.SyncEvent]:
        queue: asyncio.Queue[admin_pb2.SyncEvent] = asyncio.Queue(self.WATCH_QUEUE)

        def on_event(event: str, proxy: ProxySync, type_url: str) -> None:
            if event == "pass_done" or (request.node_id and proxy.node_id != request.node_id):
                return
            if not queue.full():
                queue.put_nowait(admin_pb2.SyncEvent(
                    event=event, type_url=type_url, at=views.timestamp(time.time()),
                    proxy=views.proxy_status(proxy, self.registry)))

        self.registry.listeners.append(on_event)
        try:
            while True:
                yield await queue.get()
        finally:
            self.registry.listeners.remove(on_event)


def add_to_server(server: grpc.aio.Server, service: AdminService) -> None:
    admin_pb2_grpc.add_AdminServicer_to_server(service, server)
