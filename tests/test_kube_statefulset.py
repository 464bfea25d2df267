"""A StatefulSet pod's replacement, object by object as the real StatefulSet and
EndpointSlice controllers and a kubelet produce it (tests/test_kubernetes.py watches the
real ones do it): its per-pod host and cluster stay throughout, so the replacement is an
endpoint change alone, and the incremental Mesh equals one built from scratch at every
step."""

from __future__ import annotations

from typing import Any

from controlplane.model.mesh import Mesh, build_mesh
from controlplane.model.parse import key_of, parse_object
from controlplane.store import Store
from controlplane.translate.clusters import service_clusters
from controlplane.translate.endpoints import service_assignments
from controlplane.translate.headless import pod_hosts

NS = "db"
FQDN = f"web.{NS}.svc.cluster.local"
POD0 = f"web-0.{FQDN}"
CLUSTER0 = f"outbound|80||{POD0}"


def headless_service() -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NS},
            "spec": {"clusterIP": "None", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


def sts_pod(name: str, ip: str = "", *, ready: bool = True, terminating: bool = False,
            phase: str = "Running") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS,
                            "labels": {"app": "web", "statefulset.kubernetes.io/pod-name": name}}
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"phase": phase, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"hostname": name, "subdomain": "web", "containers": [
                {"name": "web", "image": "demo", "ports": [{"name": "http",
                                                            "containerPort": 8080}]}]},
            "status": status}


def endpoint(name: str, ip: str, *, ready: bool = True, terminating: bool = False
             ) -> dict[str, Any]:
    return {"addresses": [ip], "hostname": name,
            "conditions": {"ready": ready, "serving": ready or terminating,
                           "terminating": terminating},
            "targetRef": {"kind": "Pod", "name": name, "namespace": NS}}


def slice_of(*endpoints: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abcde", "namespace": NS,
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": list(endpoints)}


WEB1 = endpoint("web-1", "10.0.0.11")

# What the controllers write while web-0 is deleted and replaced, one push per step
# (docs applied, or ("delete", kind, name)). Once the old pod is gone, the StatefulSet
# controller recreates it and the EndpointSlice controller drops its endpoint, both
# within milliseconds of the deletion; see the last test for that race.
REPLACEMENT: list[tuple[str, list[Any]]] = [
    ("web-0 terminating", [sts_pod("web-0", "10.0.0.10", ready=False, terminating=True),
                           slice_of(endpoint("web-0", "10.0.0.10", ready=False,
                                             terminating=True), WEB1)]),
    ("web-0 deleted", [("delete", "Pod", "web-0")]),
    ("recreated, pending", [sts_pod("web-0", ready=False, phase="Pending")]),
    ("slice drops it", [slice_of(WEB1)]),
    ("running, not ready", [sts_pod("web-0", "10.0.0.20", ready=False),
                            slice_of(endpoint("web-0", "10.0.0.20", ready=False), WEB1)]),
    ("ready", [sts_pod("web-0", "10.0.0.20"),
               slice_of(endpoint("web-0", "10.0.0.20"), WEB1)]),
]


def start() -> Store:
    store = Store()
    for doc in (headless_service(), sts_pod("web-0", "10.0.0.10"),
                sts_pod("web-1", "10.0.0.11"), slice_of(endpoint("web-0", "10.0.0.10"), WEB1)):
        store.apply(parse_object(doc))
    store.commit(store.build())
    return store


def change(store: Store, docs: list[Any]) -> Mesh:
    for doc in docs:
        if isinstance(doc, tuple):
            _, kind, name = doc
            assert kind == "Pod"
            store.delete(key_of(parse_object(sts_pod(name))))
        else:
            store.apply(parse_object(doc))
    mesh = store.build()
    store.commit(mesh)
    return mesh


def assert_same_as_from_scratch(store: Store, mesh: Mesh) -> None:
    scratch = build_mesh({key_of(o): o for o in store.objects()})
    assert dict(mesh.endpoints) == dict(scratch.endpoints)
    assert dict(mesh.pod_hostnames) == dict(scratch.pod_hostnames)


def translated(mesh: Mesh) -> tuple[list[bytes], dict[str, bytes]]:
    service = mesh.services[FQDN]
    clusters = [c.SerializeToString(deterministic=True) for c in service_clusters(mesh, service)]
    cla = {a.cluster_name: a.SerializeToString(deterministic=True)
           for a in service_assignments(mesh, service)}
    return clusters, cla


def test_a_replaced_pod_keeps_its_host_and_cluster_and_changes_only_endpoints() -> None:
    store = start()
    first = store.published
    assert first is not None and first.pod_hostnames[FQDN] == ("web-0", "web-1")
    clusters_before, _ = translated(first)
    seen_ready: list[set[str]] = []
    for step, docs in REPLACEMENT:
        mesh = change(store, docs)
        assert_same_as_from_scratch(store, mesh)
        assert not mesh.routes_changed, f"{step}: routes (RDS, and clusters) changed"
        assert FQDN in (mesh.dirty or ()), step
        assert mesh.pod_hostnames[FQDN] == ("web-0", "web-1"), step
        port = mesh.services[FQDN].ports[0]
        hosts = dict(pod_hosts(mesh, mesh.services[FQDN], port))
        assert set(hosts) == {POD0, f"web-1.{FQDN}"}, step
        clusters, cla = translated(mesh)
        assert clusters == clusters_before, f"{step}: clusters changed"
        assert CLUSTER0 in cla, step  # an assignment, empty while no pod is ready
        seen_ready.append({f"{e.ip}:{e.port}" for e in hosts[POD0]})
    # Endpoints: the old pod's address goes at once, the new one's only once ready.
    assert seen_ready == [set(), set(), set(), set(), set(), {"10.0.0.20:8080"}]


def test_a_pod_that_goes_for_good_takes_its_host_away() -> None:
    store = start()
    mesh = change(store, REPLACEMENT[0][1])  # terminating: the host stays
    assert not mesh.routes_changed
    mesh = change(store, [("delete", "Pod", "web-0"), slice_of(WEB1)])  # scaled down
    assert_same_as_from_scratch(store, mesh)
    assert mesh.routes_changed and mesh.pod_hostnames[FQDN] == ("web-1",)
    port = mesh.services[FQDN].ports[0]
    assert [h for h, _ in pod_hosts(mesh, mesh.services[FQDN], port)] == [f"web-1.{FQDN}"]
    mesh = change(store, [("delete", "Pod", "web-1"), slice_of()])
    assert_same_as_from_scratch(store, mesh)
    assert mesh.routes_changed and FQDN not in mesh.pod_hostnames


def test_only_pods_that_name_the_service_as_subdomain_get_hosts() -> None:
    store = start()
    other = sts_pod("web-9", "10.0.0.19")
    other["spec"]["subdomain"] = "elsewhere"
    mesh = change(store, [other])
    assert_same_as_from_scratch(store, mesh)
    assert not mesh.routes_changed and mesh.pod_hostnames[FQDN] == ("web-0", "web-1")


def test_deletion_recreation_and_slice_update_in_one_push_in_either_order() -> None:
    """The one window the objects leave open: after the old pod is gone and its endpoint
    dropped, before the new pod exists, nothing names web-0. The controllers close it
    within milliseconds, so those changes fall into one push (debounce) whichever comes
    first, and that push is an endpoint change alone."""
    deleted = ("delete", "Pod", "web-0")
    pending = sts_pod("web-0", ready=False, phase="Pending")
    for order in ([deleted, slice_of(WEB1), pending], [deleted, pending, slice_of(WEB1)]):
        store = start()
        change(store, REPLACEMENT[0][1])
        mesh = change(store, order)
        assert_same_as_from_scratch(store, mesh)
        assert not mesh.routes_changed and mesh.pod_hostnames[FQDN] == ("web-0", "web-1")
    # Seen apart (a push between the slice update and the recreation), the host goes and
    # comes back: routes change twice. A rule from the objects alone cannot tell this
    # from a scale-down; the StatefulSet's replicas could.
    store = start()
    change(store, REPLACEMENT[0][1])
    assert change(store, [deleted, slice_of(WEB1)]).routes_changed
    assert change(store, [pending]).routes_changed
