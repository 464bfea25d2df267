"""What the admin surfaces show, computed once here for gRPC, HTTP and the CLI: a
proxy's sync state as the admin proto, the resources it holds or would be sent now, and
Envoy's config-dump form of them."""

from __future__ import annotations

import time
from typing import Any

from envoy.admin.v3 import config_dump_pb2
from envoy.admin.v3 import config_dump_shared_pb2 as dump_pb2
from google.protobuf import any_pb2, json_format, struct_pb2, timestamp_pb2

from controlplane.admin.v1 import admin_pb2
from controlplane.status.sync import ProxySync, Status, SyncRegistry, TypeSync
from controlplane.xds import types
from controlplane.xds.cache import Snapshot

_STATUS = {
    Status.SYNCED: admin_pb2.SYNCED, Status.NOT_SENT: admin_pb2.NOT_SENT,
    Status.STALE: admin_pb2.STALE, Status.NACKED: admin_pb2.NACKED,
    Status.PENDING: admin_pb2.PENDING,
}


def timestamp(seconds: float) -> timestamp_pb2.Timestamp | None:
    if not seconds:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def type_status(type_url: str, t: TypeSync, registry: SyncRegistry,
                now: float) -> admin_pb2.TypeStatus:
    out = admin_pb2.TypeStatus(
        type_url=type_url, type=types.short(type_url),
        status=_STATUS[t.status(now, registry.stale_after)],
        sent_version=t.sent_version, sent_nonce=t.sent_nonce, sent_at=timestamp(t.sent_at),
        acked_version=t.acked_version, acked_nonce=t.acked_nonce, acked_at=timestamp(t.acked_at),
        subscribed=sorted(t.names))
    if t.nack is not None:
        out.nack.CopyFrom(admin_pb2.Nack(version=t.nack.version, nonce=t.nack.nonce,
                                         at=timestamp(t.nack.at), message=t.nack.message))
    return out


def proxy_status(proxy: ProxySync, registry: SyncRegistry) -> admin_pb2.ProxyStatus:
    now = time.time()
    metadata = struct_pb2.Struct()
    metadata.update(proxy.metadata)
    return admin_pb2.ProxyStatus(
        node_id=proxy.node_id, cluster=proxy.cluster, peer=proxy.peer,
        connected_at=timestamp(proxy.connected_at), metadata=metadata,
        build_version=proxy.build_version, stream_id=proxy.stream_id,
        types=[type_status(t, proxy.types[t], registry, now)
               for t in types.PUSH_ORDER if t in proxy.types])


def _any(type_url: str, body: bytes) -> any_pb2.Any:
    return any_pb2.Any(type_url=type_url, value=body)


def acked_resources(proxy: ProxySync) -> dict[str, dict[str, Any]]:
    """type URL -> name -> Resource the proxy holds (its last ACKed versions)."""
    return {t: dict(proxy.types[t].acked_resources) for t in types.SHOWN
            if t in proxy.types}


def current(snap: Snapshot | None, proxy: ProxySync
            ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """What the control plane would send this proxy now: type URL -> name -> Resource
    (every cluster and listener, the endpoints and routes it subscribed to), and the
    version of each type. From the sync registry's record of the stream (who it is,
    what it subscribed to), never from the stream itself."""
    if snap is None:
        return {}, {}
    resources: dict[str, dict[str, Any]] = {}
    versions: dict[str, str] = {}
    for t in types.SHOWN:
        sync = proxy.types.get(t)
        if sync is None or not sync.subscribed:
            continue
        res = snap.resources(t, proxy.proxy)
        versions[t] = res.version
        if t in types.WILDCARD_TYPES:
            resources[t] = dict(res.items)
        else:
            resources[t] = {n: res.items[n] for n in sorted(sync.names) if n in res.items}
    return resources, versions


def as_any(resources: dict[str, dict[str, Any]]) -> list[any_pb2.Any]:
    return [_any(t, r.body) for t in types.SHOWN for r in resources.get(t, {}).values()]


def config_dump(resources: dict[str, dict[str, Any]], versions: dict[str, str]
                ) -> config_dump_pb2.ConfigDump:
    """Envoy's /config_dump shape, so the two can be compared line by line."""
    dump = config_dump_pb2.ConfigDump()
    clusters = dump_pb2.ClustersConfigDump()
    for r in resources.get(types.CLUSTER, {}).values():
        clusters.dynamic_active_clusters.add(version_info=versions.get(types.CLUSTER, ""),
                                             cluster=_any(types.CLUSTER, r.body))
    endpoints = dump_pb2.EndpointsConfigDump()
    for r in resources.get(types.ENDPOINT, {}).values():
        endpoints.dynamic_endpoint_configs.add(
            version_info=versions.get(types.ENDPOINT, ""),
            endpoint_config=_any(types.ENDPOINT, r.body))
    listeners = dump_pb2.ListenersConfigDump()
    for name, r in resources.get(types.LISTENER, {}).items():
        listeners.dynamic_listeners.add(name=name).active_state.CopyFrom(
            dump_pb2.ListenersConfigDump.DynamicListenerState(
                version_info=versions.get(types.LISTENER, ""),
                listener=_any(types.LISTENER, r.body)))
    routes = dump_pb2.RoutesConfigDump()
    for r in resources.get(types.ROUTE, {}).values():
        routes.dynamic_route_configs.add(version_info=versions.get(types.ROUTE, ""),
                                         route_config=_any(types.ROUTE, r.body))
    for part in (clusters, endpoints, listeners, routes):
        dump.configs.add().Pack(part)
    return dump


def to_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)
