"""The API-server double is only useful if the official client cannot tell it from the real
thing, so these tests drive it through ``kubernetes`` itself, and check each fault the way
a watcher would meet it."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, dynamic, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config import kube_config
from kubernetes.watch.watch import iter_resp_lines

from tests.kube.double import FakeApiServer

Obj = dict[str, Any]


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.2) as s:
        yield s


@pytest.fixture
def api(server: FakeApiServer, tmp_path: Path) -> Iterator[client.ApiClient]:
    cfg = client.Configuration()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    kube_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as c:
        yield c


def svc(name: str, ns: str = "default", **labels: str) -> Obj:
    return {"metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": {}}


def pod(name: str, ns: str = "default", **labels: str) -> Obj:
    # The client's pydantic models reject a PodSpec without containers; the double stores
    # whatever it is given, so fixtures must be valid.
    spec = {"containers": [{"name": "app", "image": "app:1"}]}
    return {"metadata": {"name": name, "namespace": ns, "labels": labels}, "spec": spec}


def raw_watch(
    api: client.ApiClient, path: str, read_timeout: float = 2.0, **query: Any
) -> urllib3.HTTPResponse:
    """A WATCH as the generated API methods send it with _preload_content=False.

    kubernetes 37's ApiClient.call_api() takes a serialized request and no longer raises on
    an error status; this does what ApiClient._call_with_legacy_options() does."""
    params = [("watch", "true"), *((k, str(v)) for k, v in query.items())]
    request = api.param_serialize("GET", path, query_params=params, auth_settings=["BearerToken"])
    resp = api.call_api(*request, _request_timeout=(5, read_timeout))
    if not 200 <= resp.status <= 299:
        resp.read()
        raise ApiException.from_response(http_resp=resp, body=None, data=None)
    return resp.response


def events(resp: urllib3.HTTPResponse, limit: int | None = None) -> list[Obj]:
    """Events until the stream ends cleanly (or ``limit`` of them, then hang up)."""
    out: list[Obj] = []
    for line in iter_resp_lines(resp):
        if line:
            out.append(json.loads(line))
        if limit is not None and len(out) == limit:
            resp.close()
            break
    return out


def brief(evs: list[Obj]) -> list[tuple[str, str | None]]:
    return [(e["type"], e["object"]["metadata"].get("name")) for e in evs]


def test_official_client_lists_with_kubeconfig_and_token(
    server: FakeApiServer, api: client.ApiClient
) -> None:
    server.upsert("v1", "Service", svc("web", "a"))
    server.upsert("v1", "Service", svc("db", "b"))
    v1 = client.CoreV1Api(api)

    lst = v1.list_service_for_all_namespaces()
    assert [(s.metadata.namespace, s.metadata.name) for s in lst.items] == [
        ("a", "web"),
        ("b", "db"),
    ]
    assert lst.metadata.resource_version == server.resource_version
    assert [s.metadata.name for s in v1.list_namespaced_service("b").items] == ["db"]

    raw = json.loads(v1.list_service_for_all_namespaces(_preload_content=False).data)
    assert (raw["kind"], raw["apiVersion"]) == ("ServiceList", "v1")
    assert all("apiVersion" not in i and "kind" not in i for i in raw["items"])
    assert ("GET", "/api/v1/services", {}) in server.requests

    bad = client.Configuration()
    bad.host, bad.api_key = server.url, {"authorization": "Bearer wrong"}
    with client.ApiClient(bad) as other, pytest.raises(ApiException) as err:
        client.CoreV1Api(other).list_service_for_all_namespaces()
    assert err.value.status == 401
    assert json.loads(err.value.body)["reason"] == "Unauthorized"


def test_discovery_and_crd_group_served_only_on_demand(
    server: FakeApiServer, api: client.ApiClient, tmp_path: Path
) -> None:
    apis = client.ApisApi(api)
    assert [g.name for g in apis.get_api_versions().groups] == ["discovery.k8s.io"]
    assert client.CoreApi(api).get_api_versions().versions == ["v1"]
    kinds = {r.kind for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"Service", "Pod", "Endpoints", "Namespace"} <= kinds

    custom = client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as err:
        custom.list_cluster_custom_object("networking.istio.io", "v1", "virtualservices")
    # Like the real server for a group nobody installed: plain text, not a Status.
    assert (err.value.status, err.value.body) == (404, "404 page not found\n")

    server.serve_group("networking.istio.io", ["v1", "v1beta1"])
    server.upsert("networking.istio.io/v1beta1", "VirtualService", svc("reviews", "bookinfo"))
    istio = next(g for g in apis.get_api_versions().groups if g.name == "networking.istio.io")
    assert istio.preferred_version.version == "v1"
    for version in ("v1", "v1beta1"):
        lst = custom.list_cluster_custom_object("networking.istio.io", version, "virtualservices")
        assert lst["apiVersion"] == f"networking.istio.io/{version}"
        assert [i["metadata"]["name"] for i in lst["items"]] == ["reviews"]
    one = custom.get_namespaced_custom_object(
        "networking.istio.io", "v1", "bookinfo", "virtualservices", "reviews"
    )
    assert one["apiVersion"] == "networking.istio.io/v1"
    # The dynamic client discovers through /apis too (and caches it in a file: keep it here).
    dyn = dynamic.DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))
    vs = dyn.resources.get(api_version="networking.istio.io/v1", kind="VirtualService")
    assert [i.metadata.name for i in vs.get().items] == ["reviews"]
    server.serve_group("networking.istio.io", [])  # CRDs uninstalled
    with pytest.raises(ApiException) as err:
        custom.list_cluster_custom_object("networking.istio.io", "v1", "virtualservices")
    assert err.value.status == 404

    server.upsert("v1", "Namespace", {"metadata": {"name": "bookinfo"}})
    assert client.CoreV1Api(api).read_namespace("bookinfo").metadata.name == "bookinfo"
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(api).read_namespace("nope")
    assert json.loads(err.value.body)["details"] == {"name": "nope", "kind": "namespaces"}
    with pytest.raises(ApiException) as err:  # unknown resource in a served group: a Status
        raw_watch(api, "/api/v1/bogus")
    assert json.loads(err.value.body)["reason"] == "NotFound"


def test_list_selectors_and_consistent_pagination(
    server: FakeApiServer, api: client.ApiClient
) -> None:
    server.upsert("v1", "Pod", pod("web-1", "a", app="web", tier="front"))
    server.upsert("v1", "Pod", pod("web-2", "a", app="web"))
    server.upsert("v1", "Pod", pod("db-1", "a", app="db"))
    server.upsert("v1", "Pod", pod("web-3", "b", app="web"))
    v1 = client.CoreV1Api(api)

    def names(**kw: Any) -> list[str]:
        return [p.metadata.name for p in v1.list_pod_for_all_namespaces(**kw).items]

    assert names(label_selector="app=web") == ["web-1", "web-2", "web-3"]
    assert names(label_selector="app==web,tier") == ["web-1"]
    assert names(label_selector="app!=web") == ["db-1"]
    assert names(label_selector="!tier,app=web") == ["web-2", "web-3"]
    assert names(field_selector="metadata.namespace=b") == ["web-3"]
    with pytest.raises(ApiException) as err:
        names(label_selector="app in (web)")
    assert err.value.status == 400

    first = v1.list_namespaced_pod("a", limit=2)
    assert [p.metadata.name for p in first.items] == ["db-1", "web-1"]
    server.upsert("v1", "Pod", pod("new", "a"))  # after the snapshot: not in page two
    second = v1.list_namespaced_pod("a", limit=2, _continue=first.metadata._continue)
    assert [p.metadata.name for p in second.items] == ["web-2"]
    assert second.metadata.resource_version == first.metadata.resource_version
    assert second.metadata._continue is None

    again = v1.list_namespaced_pod("a", limit=1)
    server.compact()
    with pytest.raises(ApiException) as err:
        v1.list_namespaced_pod("a", limit=1, _continue=again.metadata._continue)
    assert (err.value.status, json.loads(err.value.body)["reason"]) == (410, "Expired")


def test_watch_stream_gets_history_then_live_events(
    server: FakeApiServer, api: client.ApiClient
) -> None:
    before = server.resource_version
    server.upsert("v1", "Service", svc("web"))

    def later() -> None:
        time.sleep(0.1)
        server.upsert("v1", "Service", svc("web", version="2"))
        server.upsert("v1", "Service", svc("other", "elsewhere"))  # other namespace
        server.delete("v1", "Service", "default", "web")

    threading.Thread(target=later, daemon=True).start()
    w = watch.Watch()
    seen = []
    started = time.monotonic()
    for ev in w.stream(
        client.CoreV1Api(api).list_namespaced_service, "default", resource_version=before,
        timeout_seconds=10,
    ):
        seen.append(ev)
        if len(seen) == 3:
            w.stop()
    assert time.monotonic() - started < 2  # live events arrive promptly, not on a poll
    assert [(e["type"], e["object"].metadata.name) for e in seen] == [
        ("ADDED", "web"),
        ("MODIFIED", "web"),
        ("DELETED", "web"),
    ]
    assert isinstance(seen[0]["object"], client.V1Service)
    assert seen[1]["object"].metadata.labels == {"version": "2"}
    rvs = [int(e["object"].metadata.resource_version) for e in seen]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    assert seen[0]["raw_object"]["apiVersion"] == "v1"  # events, unlike LIST items, have it


def test_watch_resume_from_resource_version_and_from_zero(
    server: FakeApiServer, api: client.ApiClient
) -> None:
    server.upsert("v1", "Service", svc("a"))
    mid = server.resource_version
    server.upsert("v1", "Service", svc("b"))
    server.upsert("v1", "Service", svc("a", changed="yes"))

    assert brief(events(raw_watch(api, "/api/v1/services", resourceVersion=mid), 2)) == [
        ("ADDED", "b"),
        ("MODIFIED", "a"),
    ]
    for rv in ("0", ""):  # "most recent": the current state as synthetic ADDEDs
        got = events(raw_watch(api, "/api/v1/namespaces/default/services", resourceVersion=rv), 2)
        assert brief(got) == [("ADDED", "b"), ("ADDED", "a")]
        assert got[1]["object"]["metadata"]["labels"] == {"changed": "yes"}


def test_label_selector_watch_sees_objects_leave_and_enter(
    server: FakeApiServer, api: client.ApiClient
) -> None:
    # Checked against kube-apiserver v1.37.2: leaving the selector is a DELETED carrying
    # the old state at the new resourceVersion; coming back is an ADDED.
    start = server.resource_version
    server.upsert("v1", "Pod", pod("p", app="x"))
    server.upsert("v1", "Pod", pod("p", app="y"))
    left = server.resource_version
    server.upsert("v1", "Pod", pod("p", app="y", again="1"))
    server.upsert("v1", "Pod", pod("p", app="x"))
    server.delete("v1", "Pod", "default", "p")

    got = events(
        raw_watch(api, "/api/v1/pods", resourceVersion=start, labelSelector="app=x"), 4
    )
    assert [e["type"] for e in got] == ["ADDED", "DELETED", "ADDED", "DELETED"]
    assert got[1]["object"]["metadata"]["labels"] == {"app": "x"}
    assert got[1]["object"]["metadata"]["resourceVersion"] == left


def test_compaction_expires_old_resource_versions(
    server: FakeApiServer, api: client.ApiClient
) -> None:
    server.upsert("v1", "Service", svc("web"))
    old = server.resource_version
    server.upsert("v1", "Service", svc("web", v="2"))
    server.compact()

    got = events(raw_watch(api, "/api/v1/services", resourceVersion=old))  # ends by itself
    assert len(got) == 1 and got[0]["type"] == "ERROR"
    status = got[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert status["message"].startswith(f"too old resource version: {old} (")

    # The official Watch retries a 410 once from the same version, then gives up.
    before = len(server.requests)
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(
            client.CoreV1Api(api).list_service_for_all_namespaces, resource_version=old
        ):
            pass
    assert err.value.status == 410
    assert len(server.requests) - before == 2

    assert events(raw_watch(api, "/api/v1/services", resourceVersion=server.resource_version,
                            timeoutSeconds=0.1)) == []  # the current version still works


def test_fault_gone_and_error_mid_watch_only_hit_the_chosen_kind(
    server: FakeApiServer, api: client.ApiClient
) -> None:
    for name in ("p1", "p2", "p3"):
        server.upsert("v1", "Pod", pod(name))
    server.upsert("v1", "Service", svc("web"))
    server.fail_next_watch("gone", kind="Pod", after_events=2)
    server.fail_next_watch("error", kind="Pod", code=500)

    assert brief(events(raw_watch(api, "/api/v1/services"), 1)) == [("ADDED", "web")]

    got = events(raw_watch(api, "/api/v1/pods"))
    assert [e["type"] for e in got] == ["ADDED", "ADDED", "ERROR"]
    assert (got[2]["object"]["code"], got[2]["object"]["reason"]) == (410, "Expired")
    assert "too old resource version" in got[2]["object"]["message"]

    got = events(raw_watch(api, "/api/v1/pods"))
    assert [e["type"] for e in got] == ["ERROR"]
    assert (got[0]["object"]["code"], got[0]["object"]["reason"]) == (500, "InternalError")
    assert server.pending_faults() == 0


def test_fault_cut_breaks_the_stream_mid_line(
    server: FakeApiServer, api: client.ApiClient
) -> None:
    for name in ("p1", "p2", "p3"):
        server.upsert("v1", "Pod", pod(name))
    server.fail_next_watch("cut", after_events=1)
    resp = raw_watch(api, "/api/v1/pods")
    received = b""
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for chunk in resp.stream(amt=None, decode_content=False):
            received += chunk
    first, _, partial = received.partition(b"\n")
    assert json.loads(first)["object"]["metadata"]["name"] == "p1"
    assert partial.startswith(b'{"type":"ADDED","object":{"kind":"Pod"') and b"\n" not in partial

    # What a watcher built on the official Watch meets: one event, then urllib3's error.
    server.fail_next_watch("cut", after_events=1)
    seen = []
    with pytest.raises(urllib3.exceptions.ProtocolError):
        for ev in watch.Watch().stream(client.CoreV1Api(api).list_pod_for_all_namespaces):
            seen.append(ev["object"].metadata.name)
    assert seen == ["p1"]


def test_fault_stall_read_timeout_and_release(
    server: FakeApiServer, api: client.ApiClient
) -> None:
    server.upsert("v1", "Pod", pod("p1"))
    server.fail_next_watch("stall", after_events=1)
    resp = raw_watch(api, "/api/v1/pods", read_timeout=0.3)
    lines = iter_resp_lines(resp)
    assert json.loads(next(lines))["type"] == "ADDED"
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        next(lines)
    assert 0.25 < time.monotonic() - started < 2
    resp.close()

    server.fail_next_watch("stall")
    resp = raw_watch(api, "/api/v1/pods", read_timeout=5)
    threading.Timer(0.1, server.release_stalled).start()
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.ProtocolError):  # closed, no final chunk
        events(resp)
    assert time.monotonic() - started < 2
    deadline = time.monotonic() + 2
    while server.open_watches and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.open_watches == 0


def test_fault_http500_on_watch_and_failed_list(
    server: FakeApiServer, api: client.ApiClient
) -> None:
    server.upsert("v1", "Pod", pod("p1"))
    v1 = client.CoreV1Api(api)
    server.fail_next_watch("http500", kind="Pod")
    with pytest.raises(ApiException) as err:
        v1.list_pod_for_all_namespaces(watch=True, _preload_content=False)
    assert err.value.status == 500
    assert json.loads(err.value.body)["reason"] == "InternalError"

    server.fail_next_list(kind="Service", code=503)
    assert [p.metadata.name for p in v1.list_pod_for_all_namespaces().items] == ["p1"]
    with pytest.raises(ApiException) as err:
        v1.list_service_for_all_namespaces()
    assert (err.value.status, json.loads(err.value.body)["code"]) == (503, 503)
    assert v1.list_service_for_all_namespaces().items == []


def test_bookmarks_and_timeout_seconds(server: FakeApiServer, api: client.ApiClient) -> None:
    server.upsert("v1", "Service", svc("web"))
    threading.Timer(0.3, server.upsert, ("v1", "Service", svc("web", v="2"))).start()
    started = time.monotonic()
    got = events(
        raw_watch(api, "/api/v1/services", resourceVersion=server.resource_version,
                  allowWatchBookmarks="true", timeoutSeconds=1)
    )
    assert 0.9 < time.monotonic() - started < 2  # closed cleanly by the server
    types = [e["type"] for e in got]
    assert types.count("MODIFIED") == 1 and types.count("BOOKMARK") >= 2
    modified = types.index("MODIFIED")
    for e in got:
        if e["type"] == "BOOKMARK":
            assert set(e["object"]) == {"kind", "apiVersion", "metadata"}
            assert e["object"]["kind"] == "Service"
    bookmark_rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in got]
    modified_rv = bookmark_rvs[modified]
    assert all(rv < modified_rv for rv in bookmark_rvs[:modified])
    assert all(rv >= modified_rv for rv in bookmark_rvs[modified:])

    # Without allowWatchBookmarks there are none.
    assert events(raw_watch(api, "/api/v1/services", resourceVersion=server.resource_version,
                            timeoutSeconds=0.5)) == []


def test_stop_ends_watches_and_restart_keeps_state(
    server: FakeApiServer, api: client.ApiClient
) -> None:
    server.upsert("v1", "Service", svc("web"))
    resp = raw_watch(api, "/api/v1/services", resourceVersion=server.resource_version)
    stopper = threading.Timer(0.1, server.stop)
    stopper.start()
    started = time.monotonic()
    assert events(resp) == []  # the stream ends cleanly, like a draining API server
    assert time.monotonic() - started < 2
    stopper.join()
    with pytest.raises(urllib3.exceptions.MaxRetryError):  # and the port is closed
        urllib3.PoolManager(retries=0).request("GET", server.url + "/api", timeout=1)

    rv = server.resource_version
    server.start()  # same port, same data: an API server restart in front of etcd
    lst = client.CoreV1Api(api).list_service_for_all_namespaces()
    assert [s.metadata.name for s in lst.items] == ["web"]
    assert lst.metadata.resource_version == rv
