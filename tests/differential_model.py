"""The differential property: the push loop's incremental path publishes exactly what a
from-scratch translation of the same objects publishes.

A sequence of steps (a source applying, deleting or relisting objects; a reader looking at
the store or the debug endpoint; the push loop publishing) runs against one long-lived
Store, SnapshotCache and PushLoop, as in the server. After each publish the snapshot is
compared, resource for resource and byte for byte, with the one a fresh Store, cache and
push loop publish from the objects in force (what the sources delivered, with a rejected
object replaced by what the store serves instead), and the Mesh's problems with theirs.

The universe is small on purpose, so that random steps collide: two namespaces, a few
services (selector-, EndpointSlice- and Endpoints-based; a headless one whose pods have
hostnames; two with one cluster IP), pods whose labels, IPs and readiness change, slices
that move between services, and VirtualServices/DestinationRules whose hosts exist or
not, with subsets, conflicting ages and an occasional parseable route Envoy would reject.

The file source can stand in front of the store (`file_steps`, `FileRun`): files on disk
defining objects, the same object in several files or twice in one, and the source's
scan; after each scan the store must hold exactly the objects the files define.

Shared by tests/test_differential.py (a short, derandomized run in the suite) and
benchmarks/differential.py (the long run), so both explore the same space. Everything runs
synchronously, with no event loop: the store's and the cache's asyncio.Events bind a loop
only when awaited, and nothing here awaits them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from controlplane.admin.http import HttpEndpoints
from controlplane.admin.metrics import Metrics
from controlplane.model.errors import ValidationError
from controlplane.model.mesh import Mesh
from controlplane.model.meta import Key
from controlplane.model.parse import Object, key_of, parse_object
from controlplane.model.proxy import ProxyView
from controlplane.pipeline import PushLoop
from controlplane.quarantine import Quarantine
from controlplane.sources.files import FileSource
from controlplane.status.sync import SyncRegistry
from controlplane.store import Store
from controlplane.xds import types
from controlplane.xds.cache import Snapshot, SnapshotCache

ISTIO = "networking.istio.io/v1"
SLICE_LABEL = "kubernetes.io/service-name"

# Proxies whose listeners (bind IP) and routes (namespace) differ: p0 and p2 share a
# route group and differ in listeners, p1 differs in both. p3 is in the push loop's
# probe's groups (namespace "default", bind 0.0.0.0), which are translated before the
# publish and so the only ones whose listeners and routes the next translation reuses
# when routes did not change; the others are built from scratch when first asked.
PROXIES = (
    ProxyView(node_id="p0", namespace="a", instance_ips=("10.0.0.1",)),
    ProxyView(node_id="p1", namespace="b"),
    ProxyView(node_id="p2", namespace="a", instance_ips=("10.9.0.9",)),
    ProxyView(node_id="p3"),
)
SHARED = (types.CLUSTER, types.ENDPOINT)
PER_PROXY = (types.LISTENER, types.ROUTE)

# -- the objects -------------------------------------------------------------------------
# Every object is built from its slot (kind/namespace/name) and a tuple of small ints
# (its "version"): index 0 is the plainest choice, so shrinking heads for it.

POD_LABELS: tuple[dict[str, str], ...] = (
    {"app": "web", "version": "v1"}, {"app": "web", "version": "v2"},
    {"app": "api", "version": "v1"}, {"app": "db"}, {})
# Pod and endpoint addresses per namespace; "" is a pod without an IP yet. Pods may share
# an address: the translation must not depend on which one it met first.
IPS = {"a": ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", ""),
       "b": ("10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "")}
PODS = {"a": ("p1", "p2", "p3", "p4"), "b": ("q1", "q2", "q3")}
HOSTS = ("web", "api", "db", "web.b", "legacy.b.svc.cluster.local", "nothere")
CREATED = ("", "2024-01-01T00:00:00Z", "2023-01-01T00:00:00Z")
CLUSTER_IP = "10.96.0.10"  # a/web and b/web may both claim it: a domain clash


def _meta(name: str, ns: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": ns, **extra}


def _service(name: str, ns: str, ports: list[dict[str, Any]], *,
             selector: dict[str, str] | None, cluster_ip: str = "",
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": ports, **(extra or {})}
    if selector is not None:
        spec["selector"] = selector
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, ns), "spec": spec}


def _http(port: int, target: int | str, name: str = "http", **extra: Any) -> dict[str, Any]:
    return {"name": name, "port": port, "targetPort": target, **extra}


def web_a(p: tuple[int, ...]) -> dict[str, Any]:
    ports_i, selector_i, cip = p
    ports = ([_http(80, "http")], [_http(80, 8080)],
             [_http(80, "http"), _http(9090, 9090, name="grpc")])[ports_i]
    selector = ({"app": "web"}, {"app": "web", "version": "v1"}, {"app": "api"})[selector_i]
    return _service("web", "a", ports, selector=selector, cluster_ip=CLUSTER_IP if cip else "")


def api_a(p: tuple[int, ...]) -> dict[str, Any]:
    port_i, app_protocol = p
    port = _http(8080 + port_i, 8080 + port_i,
                 **({"appProtocol": "http2"} if app_protocol else {}))
    return _service("api", "a", [port], selector={"app": "api"})


def db_a(p: tuple[int, ...]) -> dict[str, Any]:
    port_i, not_ready = p
    # HTTP first: only an HTTP port gives the pods hosts of their own (routes, clusters).
    port = (_http(80, "http"), {"name": "tcp", "port": 5432, "targetPort": 8080})[port_i]
    return _service("db", "a", [port], selector={"app": "db"}, cluster_ip="None",
                    extra={"publishNotReadyAddresses": True} if not_ready else None)


def legacy_b(p: tuple[int, ...]) -> dict[str, Any]:
    (port_i,) = p
    return _service("legacy", "b", [_http(80 + port_i, 8080 + port_i)], selector=None)


def web_b(p: tuple[int, ...]) -> dict[str, Any]:
    (cip,) = p
    return _service("web", "b", [_http(80, "http")], selector={"app": "web"},
                    cluster_ip=CLUSTER_IP if cip else "")


def pod(ns: str, name: str, p: tuple[int, ...]) -> dict[str, Any]:
    labels_i, ip_i, ready, port_i, host_i = p
    spec: dict[str, Any] = {"containers": [{
        "name": "app", "image": "demo",
        "ports": [{"name": "http", "containerPort": 8080 + port_i}]}]}
    # 1: a StatefulSet-like pod of the headless service; 2: hostname defaults to its
    # name; 3: another subdomain (no per-pod host).
    spec.update(({}, {"hostname": f"h-{name}", "subdomain": "db"}, {"subdomain": "db"},
                 {"subdomain": "other"})[host_i])
    ip = IPS[ns][ip_i]
    status: dict[str, Any] = {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": _meta(name, ns, labels=POD_LABELS[labels_i]),
            "spec": spec, "status": status}


Entry = tuple[int, int, int, int]  # (pod index, len: no targetRef), IP index, ready, hostname


def _target(ns: str, pod_i: int) -> dict[str, Any]:
    pods = PODS[ns]
    return {"targetRef": {"kind": "Pod", "name": pods[pod_i]}} if pod_i < len(pods) else {}


def endpoint_slice(ns: str, name: str, p: tuple[Any, ...]) -> dict[str, Any]:
    service_i, port_i, entries = p
    service = ("api", "web", "db")[service_i]
    endpoints = []
    for pod_i, ip_i, ready, hostname in entries:
        ip = IPS[ns][ip_i] or IPS[ns][0]
        ep: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": bool(ready)},
                              **_target(ns, pod_i)}
        if hostname:
            ep["hostname"] = f"s-{pod_i}"
        endpoints.append(ep)
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": _meta(name, ns, labels={SLICE_LABEL: service}),
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080 + port_i, "protocol": "TCP"}],
            "endpoints": endpoints}


def endpoints(ns: str, name: str, p: tuple[Any, ...]) -> dict[str, Any]:
    port_i, entries = p
    ready: list[dict[str, Any]] = []
    not_ready: list[dict[str, Any]] = []
    for pod_i, ip_i, is_ready, hostname in entries:
        addr: dict[str, Any] = {"ip": IPS[ns][ip_i] or IPS[ns][0], **_target(ns, pod_i)}
        if hostname:
            addr["hostname"] = f"e-{pod_i}"
        (ready if is_ready else not_ready).append(addr)
    subset: dict[str, Any] = {"ports": [{"name": "http", "port": 8080 + port_i}]}
    if ready:
        subset["addresses"] = ready
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    return {"apiVersion": "v1", "kind": "Endpoints", "metadata": _meta(name, ns),
            "subsets": [subset] if entries else []}


def virtual_service(ns: str, name: str, p: tuple[int, ...]) -> dict[str, Any]:
    host_i, route_i, created_i = p
    host = HOSTS[host_i]

    def to(h: str, **extra: Any) -> dict[str, Any]:
        return {"destination": {"host": h, **extra}}

    http = (
        [{"route": [to(host)]}],
        [{"route": [{**to(host, subset="v1"), "weight": 50},
                    {**to(host, subset="v2"), "weight": 50}]}],
        [{"match": [{"uri": {"prefix": "/x"}}], "route": [to("nothere")]},
         {"route": [to(host)]}],
        [{"route": [to(host)], "timeout": "3s", "retries": {"attempts": 2}}],
        # Parse, but Envoy would reject the route (an unknown header formatter; a direct
        # response over its body limit): the push loop must reject the object. Should
        # validation learn to refuse them, the step is a no-op (see `parsed`).
        [{"route": [to(host)],
          "headers": {"request": {"set": {"x-a": "%NOT_A_THING%"}}}}],
        [{"match": [{"uri": {"prefix": "/big"}}],
          "directResponse": {"status": 200, "body": {"string": "x" * 5000}}},
         {"route": [to(host)]}],
    )[route_i]
    meta = _meta(name, ns)
    if CREATED[created_i]:
        meta["creationTimestamp"] = CREATED[created_i]
    return {"apiVersion": ISTIO, "kind": "VirtualService", "metadata": meta,
            "spec": {"hosts": [host], "http": http}}


def destination_rule(ns: str, name: str, p: tuple[int, ...]) -> dict[str, Any]:
    host_i, subsets_i, policy_i, created_i = p
    subsets = ([], [("v1", "v1"), ("v2", "v2")], [("v1", "v1")], [("v3", "v3")])[subsets_i]
    spec: dict[str, Any] = {"host": HOSTS[host_i],
                            "subsets": [{"name": n, "labels": {"version": v}}
                                        for n, v in subsets]}
    policy = (None, {"loadBalancer": {"simple": "LEAST_REQUEST"}},
              {"loadBalancer": {"consistentHash": {"httpHeaderName": "x-user"}}},
              {"connectionPool": {"tcp": {"maxConnections": 10}}})[policy_i]
    if policy is not None:
        spec["trafficPolicy"] = policy
    meta = _meta(name, ns)
    if CREATED[created_i]:
        meta["creationTimestamp"] = CREATED[created_i]
    return {"apiVersion": ISTIO, "kind": "DestinationRule", "metadata": meta, "spec": spec}


def mesh_config(p: tuple[int, ...]) -> dict[str, Any]:
    """The mesh config (istio-system/istio): each outbound traffic policy, or a wrong
    mode (refused: the last good one stays)."""
    mode = ("ALLOW_ANY", "REGISTRY_ONLY", "DENY")[p[0]]
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta("istio", "istio-system"),
            "data": {"mesh": f"outboundTrafficPolicy: {{mode: {mode}}}\n"}}


def _ints(*sizes: int) -> st.SearchStrategy[tuple[int, ...]]:
    return st.tuples(*(st.integers(0, n - 1) for n in sizes))


def _entries(ns: str) -> st.SearchStrategy[tuple[tuple[int, ...], ...]]:
    """Up to three endpoint entries (see Entry)."""
    return st.lists(_ints(len(PODS[ns]) + 1, len(IPS[ns]), 2, 2), max_size=3).map(tuple)


@dataclass(frozen=True)
class Slot:
    """One object of the universe: its key, how to build a version of it, and the
    strategy for a version's parameters."""

    kind: str
    namespace: str
    name: str
    build: Callable[[tuple[Any, ...]], dict[str, Any]] = field(compare=False, repr=False)
    params: st.SearchStrategy[tuple[Any, ...]] = field(compare=False, repr=False)

    @property
    def key(self) -> Key:
        return Key(self.kind, self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def _slots() -> dict[str, Slot]:
    slots = [
        Slot("Service", "a", "web", web_a, _ints(3, 3, 2)),
        Slot("Service", "a", "api", api_a, _ints(2, 2)),
        Slot("Service", "a", "db", db_a, _ints(2, 2)),
        Slot("Service", "b", "legacy", legacy_b, _ints(2)),
        Slot("Service", "b", "web", web_b, _ints(2)),
    ]
    for ns, names in PODS.items():
        slots += [Slot("Pod", ns, n, lambda p, ns=ns, n=n: pod(ns, n, p),
                       _ints(len(POD_LABELS), len(IPS[ns]), 2, 2, 4)) for n in names]
    slots += [Slot("EndpointSlice", "a", n, lambda p, n=n: endpoint_slice("a", n, p),
                   st.tuples(st.integers(0, 2), st.integers(0, 1), _entries("a")))
              for n in ("api-1", "api-2")]
    slots += [Slot("Endpoints", ns, n, lambda p, ns=ns, n=n: endpoints(ns, n, p),
                   st.tuples(st.integers(0, 1), _entries(ns)))
              for ns, n in (("b", "legacy"), ("a", "web"))]
    slots += [Slot("VirtualService", ns, n, lambda p, ns=ns, n=n: virtual_service(ns, n, p),
                   _ints(len(HOSTS), 6, len(CREATED)))
              for ns, n in (("a", "vs1"), ("a", "vs2"), ("b", "vs3"))]
    slots += [Slot("DestinationRule", ns, n,
                   lambda p, ns=ns, n=n: destination_rule(ns, n, p),
                   _ints(len(HOSTS), 4, 4, len(CREATED)))
              for ns, n in (("a", "dr1"), ("a", "dr2"), ("b", "dr3"))]
    slots.append(Slot("ConfigMap", "istio-system", "istio", mesh_config, _ints(3)))
    return {str(s): s for s in slots}


SLOTS = _slots()
KINDS = tuple(dict.fromkeys(s.kind for s in SLOTS.values()))


def parsed(slot: Slot, params: tuple[Any, ...]) -> Object | None:
    """The object a source would deliver, or None when validation refuses it (a source
    keeps the last good version then, which is no store change)."""
    try:
        return parse_object(slot.build(params))
    except ValidationError:
        return None


# -- the steps -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Apply:
    slot: str
    params: tuple[Any, ...]

    def __str__(self) -> str:
        return f"apply {self.slot} {self.params}"


@dataclass(frozen=True)
class Delete:
    slot: str

    def __str__(self) -> str:
        return f"delete {self.slot}"


@dataclass(frozen=True)
class Replace:
    """A relist: the store holds exactly these objects of `kind` (in `namespace`, or in
    all). The same slot may come twice (two definitions; the last wins)."""

    kind: str
    objects: tuple[tuple[str, tuple[Any, ...]], ...]
    namespace: str | None

    def __str__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return (f"replace {self.kind}{where} with "
                f"[{', '.join(f'{s} {p}' for s, p in self.objects)}]")


@dataclass(frozen=True)
class Read:
    """A reader between changes: must never move the push loop's state forward."""

    what: str  # mesh | published | problems | configz | proxy<i>

    def __str__(self) -> str:
        return f"read {self.what}"


@dataclass(frozen=True)
class Publish:
    """The push loop publishes; then per-proxy types are compared for `proxies` (the
    others stay unbuilt in this snapshot, as for proxy groups nobody connected from)."""

    proxies: tuple[int, ...]

    def __str__(self) -> str:
        return f"publish (compare proxies {list(self.proxies)})"


@dataclass(frozen=True)
class Nack:
    """A proxy rejected the newest snapshot's `type` (0: routes, 1: clusters) with a
    message naming `service`'s host (or nothing, ""): the quarantine traces it to an
    object and the store serves the version published before it."""

    type: int
    service: str

    def __str__(self) -> str:
        return f"nack {types.short(NACK_TYPES[self.type])} naming {self.service or 'nothing'}"


NACK_TYPES = (types.ROUTE, types.CLUSTER)
NACK_SERVICES = ("", "web.a", "api.a", "legacy.b", "web.b")

Step = Apply | Delete | Replace | Read | Publish | Nack

READS = ("mesh", "published", "problems", "configz", *(f"proxy{i}" for i in range(len(PROXIES))))


@st.composite
def _apply(draw: st.DrawFn) -> Apply:
    slot = draw(st.sampled_from(sorted(SLOTS)))
    return Apply(slot, draw(SLOTS[slot].params))


@st.composite
def _replace(draw: st.DrawFn) -> Replace:
    kind = draw(st.sampled_from(KINDS))
    namespace = draw(st.sampled_from((None, "a", "b")))
    names = sorted(n for n, s in SLOTS.items() if s.kind == kind
                   and (namespace is None or s.namespace == namespace))
    if not names:
        return Replace(kind, (), namespace)
    chosen = draw(st.lists(st.sampled_from(names), max_size=4))
    return Replace(kind, tuple((n, draw(SLOTS[n].params)) for n in chosen), namespace)


def _publish() -> st.SearchStrategy[Publish]:
    """Half the publishes compare every proxy; the others some (or none), leaving the
    other groups unbuilt in that snapshot."""
    every = tuple(range(len(PROXIES)))
    return st.one_of(st.just(Publish(every)), st.builds(
        Publish, st.sets(st.integers(0, len(PROXIES) - 1)).map(lambda s: tuple(sorted(s)))))


def steps(rounds: int = 8, changes: int = 10, reads: tuple[str, ...] = READS
          ) -> st.SearchStrategy[list[Step]]:
    """A sequence of rounds, each some changes (mostly applies: new objects, new
    versions; with deletes, relists and `reads` among them) and then a publish. The
    runner publishes once more at the end."""
    change = st.one_of(
        _apply(), _apply(), _apply(),
        st.builds(Delete, st.sampled_from(sorted(SLOTS))),
        *([st.builds(Read, st.sampled_from(reads))] if reads else []),
        _replace(),
        st.builds(Nack, st.integers(0, len(NACK_TYPES) - 1), st.sampled_from(NACK_SERVICES)),
    )
    one_round = st.tuples(st.lists(change, max_size=changes), _publish())
    return st.lists(one_round, min_size=1, max_size=rounds).map(
        lambda rs: [s for cs, p in rs for s in (*cs, p)])


# -- running and comparing -----------------------------------------------------------------

class Difference(AssertionError):
    """The incremental path published something a from-scratch translation does not."""


@dataclass
class Tally:
    sequences: int = 0
    steps: int = 0
    publishes: int = 0
    compared: int = 0  # publishes compared with a from-scratch translation
    # Publishes not compared: some unit failed and was withheld or its object rejected,
    # which depends on history (the last good version) by design.
    history_dependent: int = 0
    rejections: int = 0  # objects the push loop rejected
    quarantined: int = 0  # objects a NACK took out of service


def in_force(store: Store) -> list[Object]:
    """The objects the store translates: as delivered, a rejected one replaced by the
    version served instead (or left out)."""
    out = []
    for obj in store.objects():
        rejection = store.rejections.get(key_of(obj))
        if rejection is None:
            out.append(obj)
        elif rejection.serving is not None:
            out.append(rejection.serving)
    return out


def _resources(snap: Snapshot, type_url: str, proxy: ProxyView | None
               ) -> tuple[str, dict[str, tuple[str, bytes, tuple[str, ...]]]]:
    tr = (snap.for_key(type_url, None) if proxy is None
          else snap.resources(type_url, proxy))
    return tr.version, {n: (r.version, r.body, r.deps) for n, r in tr.items.items()}


def _compare_type(label: str, got: tuple[str, dict[str, Any]],
                  want: tuple[str, dict[str, Any]]) -> list[str]:
    (got_version, got_items), (want_version, want_items) = got, want
    out = []
    for name in sorted(got_items.keys() | want_items.keys()):
        g, w = got_items.get(name), want_items.get(name)
        if g is None:
            out.append(f"{label} {name}: missing (from scratch: version {w[0]})")
        elif w is None:
            out.append(f"{label} {name}: published (version {g[0]}) but gone from scratch")
        elif g != w:
            what = "bytes" if g[1] != w[1] else "dependencies"
            out.append(f"{label} {name}: {what} differ (published version {g[0]}, "
                       f"from scratch {w[0]})")
    if not out and got_version != want_version:
        out.append(f"{label}: type version {got_version} != {want_version} "
                   "with the same resources")
    return out


def _plain_endpoints(mesh: Mesh, key: tuple[str, int]) -> tuple[tuple[Any, ...], ...] | None:
    eps = mesh.endpoints.get(key)
    return None if eps is None else tuple(astuple(e) for e in eps)


def _decode(type_url: str, body: bytes) -> str:
    return str(types.decode(type_url, body))


class Run:
    """One sequence against one long-lived store, cache and push loop."""

    def __init__(self, store_factory: Callable[[], Store] = Store,
                 tally: Tally | None = None) -> None:
        self.store = store_factory()
        self.cache = SnapshotCache()
        self.loop = PushLoop(self.store, self.cache)
        registry = SyncRegistry()
        self.http = HttpEndpoints(self.store, registry, self.cache, Metrics())
        self.quarantine = Quarantine(self.store, registry, lambda: self.loop.committed)
        self.tally = tally or Tally()

    def step(self, step: Step) -> None:
        self.tally.steps += 1
        store = self.store
        if isinstance(step, Apply):
            obj = parsed(SLOTS[step.slot], step.params)
            if obj is not None:
                store.apply(obj)
        elif isinstance(step, Delete):
            store.delete(SLOTS[step.slot].key)
        elif isinstance(step, Replace):
            objs = [o for s, p in step.objects if (o := parsed(SLOTS[s], p)) is not None]
            store.replace(step.kind, objs,
                          frozenset({step.namespace}) if step.namespace else None)
        elif isinstance(step, Read):
            self.read(step.what)
        elif isinstance(step, Nack):
            snap = self.cache.snapshot
            if snap is not None:
                named = (f"{step.service}.svc.cluster.local: " if step.service else "")
                before = len(store.rejections)
                self.quarantine.nacked("p0", NACK_TYPES[step.type], snap.generation,
                                       f"{named}rejected by the differential test")
                self.tally.quarantined += len(store.rejections) - before
        else:
            self.publish(step.proxies)

    def read(self, what: str) -> None:
        store = self.store
        if what == "mesh":
            store.mesh()
        elif what == "published":
            _ = store.published
        elif what == "problems":
            store.problems()
        elif what == "configz":
            status, _, _ = self.http.configz({})
            assert status == 200
        else:  # a stream of that proxy asking for its listeners and routes
            snap = self.cache.snapshot
            if snap is not None:
                proxy = PROXIES[int(what.removeprefix("proxy"))]
                for type_url in PER_PROXY:
                    snap.resources(type_url, proxy)

    def publish(self, proxies: tuple[int, ...]) -> None:
        """Publish incrementally, then from scratch, and compare."""
        tally = self.tally
        tally.publishes += 1
        rejected_before = len(self.store.rejections)
        ok = self.loop.publish()
        tally.rejections += max(0, len(self.store.rejections) - rejected_before)

        fresh = Store()
        for obj in in_force(self.store):
            fresh.apply(obj)
        fresh_loop = PushLoop(fresh, SnapshotCache())
        fresh_ok = fresh_loop.publish()
        # A unit withheld (its last good messages kept) or an object rejected from
        # scratch: what is served then depends on history by design, not comparable.
        if self.loop.withheld or fresh_loop.withheld or fresh.rejections:
            tally.history_dependent += 1
            return
        if ok != fresh_ok:
            raise Difference(f"publish returned {ok}; from scratch {fresh_ok}")
        if not ok:
            return
        tally.compared += 1
        diffs = self.differences(fresh, fresh_loop, proxies)
        if diffs:
            raise Difference("\n".join(diffs))

    def differences(self, fresh: Store, fresh_loop: PushLoop,
                    proxies: tuple[int, ...]) -> list[str]:
        mesh, want_mesh = self.store.published, fresh.published
        assert mesh is not None and want_mesh is not None
        snap, want = self.cache.snapshot, fresh_loop.cache.snapshot
        assert snap is not None and want is not None
        out = []
        if mesh.problems != want_mesh.problems:
            out.append(f"mesh problems differ:\n  published:    {list(mesh.problems)}\n"
                       f"  from scratch: {list(want_mesh.problems)}")
        hostnames = getattr(mesh, "pod_hostnames", None)
        want_hostnames = getattr(want_mesh, "pod_hostnames", None)
        if hostnames != want_hostnames:
            out.append(f"mesh pod hostnames differ:\n  published:    {hostnames}\n"
                       f"  from scratch: {want_hostnames}")
        for key in sorted(mesh.endpoints.keys() | want_mesh.endpoints.keys()):
            if _plain_endpoints(mesh, key) != _plain_endpoints(want_mesh, key):
                out.append(f"mesh endpoints of {key[0]}:{key[1]} differ:\n"
                           f"  published:    {mesh.endpoints.get(key)}\n"
                           f"  from scratch: {want_mesh.endpoints.get(key)}")
        checks: list[tuple[str, str, ProxyView | None]] = [
            (types.short(t), t, None) for t in SHARED]
        checks += [(f"{types.short(t)}[{PROXIES[i].node_id}]", t, PROXIES[i])
                   for i in proxies for t in PER_PROXY]
        for label, type_url, proxy in checks:
            got = _resources(snap, type_url, proxy)
            wanted = _resources(want, type_url, proxy)
            found = _compare_type(label, got, wanted)
            out += found
            for line in found[:1]:  # the first differing body, decoded, for the report
                name = line.split(" ", 2)[1].rstrip(":")
                if name in got[1] and name in wanted[1]:
                    out.append(f"  published:    {_decode(type_url, got[1][name][1])}\n"
                               f"  from scratch: {_decode(type_url, wanted[1][name][1])}")
        return out


def run_sequence(sequence: list[Step], store_factory: Callable[[], Store] = Store,
                 tally: Tally | None = None) -> Tally:
    """Run the steps, then publish once more (comparing every proxy): raises Difference."""
    run = Run(store_factory, tally)
    run.tally.sequences += 1
    for step in sequence:
        run.step(step)
    run.step(Publish(tuple(range(len(PROXIES)))))
    return run.tally


def describe(sequence: Sequence[object]) -> str:
    """The sequence, one numbered step a line, as the report of a failure shows it."""
    return "\n".join(f"  {i:2d}. {s}" for i, s in enumerate(sequence, 1))


def minimise(sequence: list[Step], store_factory: Callable[[], Store] = Store
             ) -> tuple[list[Step], BaseException | None]:
    """Drop steps one at a time while the sequence still fails the same way (the same
    exception type): hypothesis' shrinking leaves some padding in these nested lists."""

    def failure(seq: list[Step]) -> BaseException | None:
        try:
            run_sequence(seq, store_factory)
        except Exception as exc:
            return exc
        return None

    exc = failure(sequence)
    if exc is None:
        return sequence, None
    kind = type(exc)
    shrunk = True
    while shrunk:
        shrunk = False
        for i in range(len(sequence)):
            candidate = sequence[:i] + sequence[i + 1:]
            found = failure(candidate)
            if isinstance(found, kind):
                sequence, exc, shrunk = candidate, found, True
                break
    return sequence, exc


# -- the file source in front of the store -------------------------------------------------
# Files define objects; the same object may be defined by several files (a new version
# dropped beside the old one) or twice in one file. Removing one definition must leave
# the object served from another, never deleted.

FILES = ("a.yaml", "b.yaml", "c/d.yaml")
# Few slots, so that files often define the same objects.
FILE_SLOTS = ("Service a/web", "Service a/api", "Pod a/p1", "Pod a/p3",
              "EndpointSlice a/api-1", "VirtualService a/vs1", "DestinationRule a/dr1")


@dataclass(frozen=True)
class WriteFile:
    file: int
    objects: tuple[tuple[str, tuple[Any, ...]], ...]

    def __str__(self) -> str:
        return (f"write {FILES[self.file]} with "
                f"[{', '.join(f'{s} {p}' for s, p in self.objects)}]")


@dataclass(frozen=True)
class RemoveFile:
    file: int

    def __str__(self) -> str:
        return f"remove {FILES[self.file]}"


@dataclass(frozen=True)
class Scan:
    """The file source's poll step: what changed on disk reaches the store."""

    def __str__(self) -> str:
        return "scan"


FileStep = WriteFile | RemoveFile | Scan | Read | Publish


@st.composite
def _write(draw: st.DrawFn) -> WriteFile:
    chosen = draw(st.lists(st.sampled_from(FILE_SLOTS), max_size=4))
    return WriteFile(draw(st.integers(0, len(FILES) - 1)),
                     tuple((n, draw(SLOTS[n].params)) for n in chosen))


def file_steps(rounds: int = 6, changes: int = 8) -> st.SearchStrategy[list[FileStep]]:
    """Rounds of file writes and removals, scans and reads, each ending with a publish
    (after a scan, or not). The runner scans and publishes once more at the end."""
    change = st.one_of(
        _write(), _write(),
        st.builds(RemoveFile, st.integers(0, len(FILES) - 1)),
        st.just(Scan()), st.just(Scan()),
        st.builds(Read, st.sampled_from(READS)),
    )
    one_round = st.tuples(st.lists(change, max_size=changes), st.booleans(), _publish())
    return st.lists(one_round, min_size=1, max_size=rounds).map(
        lambda rs: [s for cs, scan, p in rs for s in (*cs, *([Scan()] if scan else []), p)])


class FileRun(Run):
    """A Run whose store is fed by a FileSource over `directory` only."""

    def __init__(self, directory: Path, tally: Tally | None = None) -> None:
        super().__init__(Store, tally)
        self.directory = directory
        self.source = FileSource(self.store, directory)
        self.on_disk: dict[int, list[Object]] = {}
        self.mtime = 1_000_000_000 * 10**9  # each write a new, later mtime (no clock)

    def file_step(self, step: FileStep) -> None:
        if isinstance(step, WriteFile):
            self.tally.steps += 1
            objs = [(SLOTS[s].build(p), o) for s, p in step.objects
                    if (o := parsed(SLOTS[s], p)) is not None]
            path = self.directory / FILES[step.file]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump_all([raw for raw, _ in objs]))
            self.mtime += 10**9
            os.utime(path, ns=(self.mtime, self.mtime))
            self.on_disk[step.file] = [o for _, o in objs]
        elif isinstance(step, RemoveFile):
            self.tally.steps += 1
            path = self.directory / FILES[step.file]
            if path.exists():
                path.unlink()
            self.on_disk.pop(step.file, None)
        elif isinstance(step, Scan):
            self.tally.steps += 1
            self.source.sync_once(settle=False)
            self.check_store()
        else:
            self.step(step)

    def check_store(self) -> None:
        """The store holds exactly the objects some file defines, each as one of its
        definitions (which one is the file source's choice: the newest)."""
        defined: dict[Key, list[Object]] = {}
        for objs in self.on_disk.values():
            last = {key_of(o): o for o in objs}  # in one file, the last document wins
            for key, obj in last.items():
                defined.setdefault(key, []).append(obj)
        held = {key_of(o): o for o in self.store.objects()}
        out = []
        for key in sorted(defined.keys() | held.keys(), key=str):
            if key not in held:
                out.append(f"{key}: defined by {len(defined[key])} file(s) but not in "
                           "the store")
            elif key not in defined:
                out.append(f"{key}: in the store but defined by no file")
            elif held[key] not in defined[key]:
                out.append(f"{key}: the store holds a version no file defines")
        if out:
            raise Difference("after a scan:\n" + "\n".join(out))


def run_file_sequence(sequence: list[FileStep], directory: Path,
                      tally: Tally | None = None) -> Tally:
    """Run the steps against an empty `directory`, then scan and publish once more."""
    run = FileRun(directory, tally)
    run.tally.sequences += 1
    for step in [*sequence, Scan(), Publish(tuple(range(len(PROXIES))))]:
        run.file_step(step)
    return run.tally
