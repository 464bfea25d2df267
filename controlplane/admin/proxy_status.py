"""`controlplane proxy-status`: has each proxy taken its config? In the layout
`istioctl proxy-status` users know, plus the NACK reason Istio does not show."""

from __future__ import annotations

import difflib
import json
import sys
import urllib.request
from collections import Counter
from typing import Any, TextIO

import grpc
from google.protobuf import json_format

from controlplane.admin.v1 import admin_pb2, admin_pb2_grpc
from controlplane.xds import types

# A type is listed once the proxy asked for it, so a listed NOT SENT is a proxy waiting
# for config (Envoy's initial fetch stalls on it); a type never asked for is not listed
# and is fine.
OK_STATUSES = {admin_pb2.SYNCED}
COLUMNS = (types.CLUSTER, types.LISTENER, types.ENDPOINT, types.ROUTE)  # istioctl's order
# Envoy's dump renders endpoints its own way (defaults filled in), so live comparisons
# cover the types it dumps as received.
LIVE_TYPES = (types.CLUSTER, types.LISTENER, types.ROUTE)
TIMEOUT = 10.0  # seconds for each admin API call


def status_name(value: int) -> str:
    return admin_pb2.SyncStatus.Name(value).replace("_", " ")


def is_synced(proxy: admin_pb2.ProxyStatus) -> bool:
    return all(t.status in OK_STATUSES for t in proxy.types)


def _cells(proxy: admin_pb2.ProxyStatus, shared_id: bool = False) -> list[str]:
    """shared_id: another stream has this node id too; the row names its stream."""
    by_type = {t.type_url: t for t in proxy.types}
    cells = [f"{proxy.node_id}#{proxy.stream_id}" if shared_id else proxy.node_id,
             proxy.cluster]
    cells += [status_name(by_type[t].status) if t in by_type else "NOT SENT" for t in COLUMNS]
    cells.append(proxy.build_version or "-")
    nacks = [f"{t.type}: {summarize_nack(t.nack.message)}" for t in proxy.types
             if t.status == admin_pb2.NACKED]
    cells.append(nacks[0] if nacks else "")
    return cells


def summarize_nack(message: str, limit: int = 160) -> str:
    """Envoy's validation errors embed a dump of the whole rejected proto before the
    reason; a table row keeps what it was doing and why (the detail view has it all)."""
    text = " ".join(message.split())
    marker = " : Proto constraint validation failed"
    if marker in text:
        head, _, reason = text.partition(marker)
        what = head.split(": ", 1)[0]
        text = f"{what}: Proto constraint validation failed{reason}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_table(proxies: list[admin_pb2.ProxyStatus]) -> str:
    """One row per stream. A node id held by several streams (an Envoy hot restart, a
    reconnect before the old stream ended, or a forged id) is shown as NAME#STREAM on
    each, so no stream's state passes for another's."""
    header = ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "VERSION", "NACK"]
    streams = Counter(p.node_id for p in proxies)
    rows = [header, *(_cells(p, streams[p.node_id] > 1) for p in proxies)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows) + "\n"


def render_rejected(rejected: Any) -> str:
    """Objects no proxy is sent as written: every proxy is affected alike, so they are
    listed once, under the table."""
    if not rejected:
        return ""
    lines = ["", "REJECTED OBJECTS (not sent to any proxy as written)"]
    for r in rejected:
        serving = "its last good version is served" if r.serving_last_good else (
            "nothing of it is served")
        lines.append(f"{r.object}  by {r.by}; {serving}: {summarize_nack(r.reason, 200)}")
    return "\n".join(lines) + "\n"


def _to_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def by_name(anys: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """type URL -> name -> resource as JSON, from packed resources."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for a in anys:
        message = types.decode(a.type_url, a.value)
        out.setdefault(a.type_url, {})[types.resource_name(a.type_url, message)] = (
            _to_json(message))
    return out


def live_config(envoy_admin: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Clusters, listeners and routes an Envoy holds, from its /config_dump."""
    url = f"{envoy_admin.rstrip('/')}/config_dump"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
        dump = json.load(r)
    out: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in LIVE_TYPES}
    for config in dump.get("configs", []):
        kind = config.get("@type", "").rsplit(".", 1)[-1]
        if kind == "ClustersConfigDump":
            found = [(types.CLUSTER, c["cluster"]) for c in
                     config.get("dynamic_active_clusters", [])]
        elif kind == "ListenersConfigDump":
            found = [(types.LISTENER, item["active_state"]["listener"]) for item in
                     config.get("dynamic_listeners", []) if "active_state" in item]
        elif kind == "RoutesConfigDump":
            found = [(types.ROUTE, c["route_config"]) for c in
                     config.get("dynamic_route_configs", [])]
        else:
            continue
        for type_url, resource in found:
            resource = {k: v for k, v in resource.items() if k != "@type"}
            out[type_url][resource["name"]] = resource
    return out


def diff(held: dict[str, dict[str, dict[str, Any]]], current: dict[str, dict[str, dict[str,
         Any]]], held_label: str, type_urls: tuple[str, ...] = types.PUSH_ORDER) -> str:
    lines: list[str] = []
    for t in type_urls:
        left, right = held.get(t, {}), current.get(t, {})
        for name in sorted(left.keys() | right.keys()):
            a = json.dumps(left[name], indent=2, sort_keys=True).splitlines() if (
                name in left) else []
            b = json.dumps(right[name], indent=2, sort_keys=True).splitlines() if (
                name in right) else []
            lines += difflib.unified_diff(a, b, f"{types.short(t)} {name} ({held_label})",
                                          f"{types.short(t)} {name} (control plane)",
                                          lineterm="")
    return "\n".join(lines) + ("\n" if lines else "")


def render_detail(detail: admin_pb2.ProxyDetail) -> str:
    p = detail.status
    out = [f"NODE     {p.node_id}", f"STREAM   {p.stream_id}", f"CLUSTER  {p.cluster}",
           f"PEER     {p.peer}",
           f"VERSION  {p.build_version or '-'}", ""]
    for t in p.types:
        out.append(f"{t.type}  {status_name(t.status)}")
        out.append(f"  sent   version {t.sent_version or '-'}  nonce {t.sent_nonce or '-'}"
                   f"  at {t.sent_at.ToJsonString() if t.HasField('sent_at') else '-'}")
        out.append(f"  acked  version {t.acked_version or '-'}  nonce {t.acked_nonce or '-'}"
                   f"  at {t.acked_at.ToJsonString() if t.HasField('acked_at') else '-'}")
        if t.HasField("nack"):
            out.append(f"  NACK   version {t.nack.version}  nonce {t.nack.nonce}: "
                       f"{' '.join(t.nack.message.split())}")
        if t.subscribed:
            out.append(f"  subscribed  {len(t.subscribed)} names")
    return "\n".join(out) + "\n"


def _other_streams(stub: admin_pb2_grpc.AdminStub, shown: admin_pb2.ProxyStatus
                   ) -> list[admin_pb2.ProxyStatus]:
    """Other streams with the node id of the one GetProxy showed (the newest). Only a
    note: the list of every proxy may be too large to fetch, and the detail stands
    without it."""
    try:
        proxies = stub.ListProxies(admin_pb2.ListProxiesRequest(), timeout=TIMEOUT).proxies
    except grpc.RpcError:
        return []
    return [p for p in proxies if p.node_id == shown.node_id and p.stream_id != shown.stream_id]


def error_line(server: str, exc: grpc.RpcError) -> str:
    """One line a person can act on. Not reaching the server is the common case (nothing
    running, or another --admin-address): say where we looked and how to look elsewhere,
    not gRPC's connection trace."""
    code, details = exc.code(), exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        # gRPC's details end with the reason: "...: Connection refused", or
        # "...: Domain name not found]".
        reason = details.rsplit(": ", 1)[-1].strip(" []") or code.name
        return (f"no control plane answers at {server} ({reason}); is `controlplane serve` "
                f"running? Point --server HOST:PORT at its --admin-address")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return (f"no answer from {server} within {TIMEOUT:g}s; is it a control plane's "
                f"--admin-address? Point --server HOST:PORT at it")
    return f"{code.name}: {details}"


def run(server: str, node_id: str | None, output: str, envoy_admin: str | None,
        out: TextIO = sys.stdout) -> int:
    with grpc.insecure_channel(server) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        try:
            if node_id is None:
                listing = stub.ListProxies(admin_pb2.ListProxiesRequest(), timeout=TIMEOUT)
                proxies = list(listing.proxies)
                if output == "json":
                    out.write(json.dumps([_to_json(p) for p in proxies], indent=2) + "\n")
                    if listing.rejected:  # the JSON on stdout stays a list of proxies
                        sys.stderr.write(render_rejected(listing.rejected))
                else:
                    out.write(render_table(proxies))
                    out.write(render_rejected(listing.rejected))
                return 0 if all(is_synced(p) for p in proxies) else 1
            detail = stub.GetProxy(admin_pb2.GetProxyRequest(node_id=node_id), timeout=TIMEOUT)
        except grpc.RpcError as exc:
            sys.stderr.write(f"proxy-status: {error_line(server, exc)}\n")
            return 2
        others = _other_streams(stub, detail.status)
    if others:
        sys.stderr.write(
            f"proxy-status: {len(others) + 1} streams have node id {node_id!r}; showing "
            f"stream {detail.status.stream_id} ({detail.status.peer}), the newest; also "
            + ", ".join(f"stream {p.stream_id} ({p.peer})" for p in others) + "\n")
    current = by_name(detail.current_resources)
    compared: tuple[str, ...]
    if envoy_admin:
        held, label, compared = live_config(envoy_admin), "envoy", LIVE_TYPES
    else:
        held, label, compared = by_name(detail.acked_resources), "acked", types.PUSH_ORDER
    changes = diff(held, current, label, compared)
    if output == "json":
        out.write(json.dumps({"status": _to_json(detail.status), "diff": changes},
                             indent=2) + "\n")
    else:
        out.write(render_detail(detail))
        out.write(f"\nDIFF ({label} -> control plane)\n")
        out.write(changes or "none\n")
    return 0 if is_synced(detail.status) else 1
