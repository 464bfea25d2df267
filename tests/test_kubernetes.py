"""The Kubernetes watcher against a real API server and the real StatefulSet and
EndpointSlice controllers (built from Go modules; see tools/kube/build.sh).

Pods get 192.0.2.x addresses (the API server refuses loopback ones in EndpointSlices):
scripts/test runs the suite in its own network namespace where that range is local.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from controlplane import log as logsetup
from controlplane.model.meta import Key
from controlplane.sources.kubernetes import load_api_client
from controlplane.sources.watch import Backoff
from tests.harness import ControlPlane, get, wait_until
from tests.kube.kubelet import FakeKubelet
from tests.manifests import destination_rule, service, virtual_service
from tests.tls_certs import TestCa
from tests.tls_upstream import TlsUpstream

CRDS = Path(__file__).parents[1] / "config" / "kubernetes" / "crds.yaml"


def require_pod_network() -> None:
    try:
        with socket.socket() as s:
            s.bind(("192.0.2.1", 0))
    except OSError:
        pytest.fail("192.0.2.0/24 is not local here: these tests give pods such addresses "
                    "(the API server refuses loopback ones). Run them through scripts/test, "
                    "which runs the suite in a network namespace where the range is local.")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from tests.kube.cluster import LocalCluster

    require_pod_network()
    with LocalCluster(controllers=True) as c:
        yield c


@pytest.fixture(scope="module")
def api(cluster: Any) -> Any:
    return load_api_client(str(cluster.kubeconfig_path))


@pytest.fixture
def ns(api: Any) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(
        metadata=client.V1ObjectMeta(name=name)))
    return name


def install_crds(api: Any) -> None:
    ext = client.ApiextensionsV1Api(api)
    for doc in yaml.safe_load_all(CRDS.read_text()):
        try:
            ext.create_custom_resource_definition(doc)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def established() -> bool:
        return all(any(c.type == "Established" and c.status == "True"
                       for c in (ext.read_custom_resource_definition(
                           d["metadata"]["name"]).status.conditions or []))
                   for d in yaml.safe_load_all(CRDS.read_text()))
    wait_until(established, 30, what="CRDs established")
    wait_until(lambda: client.CustomObjectsApi(api).list_cluster_custom_object(
        "networking.istio.io", "v1", "virtualservices") is not None, 30)


def delete_crds(api: Any) -> None:
    ext = client.ApiextensionsV1Api(api)
    for doc in yaml.safe_load_all(CRDS.read_text()):
        try:
            ext.delete_custom_resource_definition(doc["metadata"]["name"])
        except ApiException as exc:
            if exc.status != 404:
                raise

    def gone() -> bool:
        try:
            client.CustomObjectsApi(api).list_cluster_custom_object(
                "networking.istio.io", "v1", "virtualservices")
        except ApiException as exc:
            return exc.status == 404
        return False
    wait_until(gone, 60, what="CRDs deleted")


def create(api: Any, doc: dict[str, Any]) -> None:
    ns = doc["metadata"]["namespace"]
    if doc["kind"] == "Service":
        client.CoreV1Api(api).create_namespaced_service(ns, doc)
    elif doc["kind"] in ("VirtualService", "DestinationRule", "Sidecar"):
        group, version = doc["apiVersion"].split("/")
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            group, version, ns, doc["kind"].lower() + "s", doc)
    else:
        raise ValueError(doc["kind"])


def kube_plane(api: Any, **kwargs: Any) -> ControlPlane:
    return ControlPlane(kubernetes={"api_client": api, "crd_retry": 0.5, **kwargs},
                        quiet=0.1, max_delay=1.0)


def stored(plane: ControlPlane, kind: str, ns: str, name: str) -> Any:
    return plane.run(lambda: plane.store.get(Key(kind, ns, name)))


def test_missing_crds_are_retried_and_the_rest_is_served(api: Any, ns: str) -> None:
    delete_crds(api)
    create(api, service("web", 80, ns=ns))
    with structlog.testing.capture_logs() as logs:
        plane = kube_plane(api, namespaces=frozenset({ns}))
        try:
            wait_until(lambda: plane.run(lambda: plane.store.synced), 30, what="synced")
            assert stored(plane, "Service", ns, "web") is not None
            assert any(e["event"] == "istio_crds_missing" for e in logs)
            install_crds(api)
            vs = virtual_service("web", ["web"], [{"route": [{"destination": {"host": "web"}}]}],
                                 ns=ns)
            create(api, vs)
            wait_until(lambda: stored(plane, "VirtualService", ns, "web"), 30,
                       what="VirtualService mirrored once the CRDs exist")
        finally:
            plane.stop()


def test_sidecars_are_mirrored_and_an_old_crd_set_without_them_still_syncs(
        api: Any, ns: str) -> None:
    install_crds(api)
    sidecar = {"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
               "metadata": {"name": "default", "namespace": ns},
               "spec": {"egress": [{"hosts": ["./*"]}]}}
    create(api, sidecar)
    plane = kube_plane(api, namespaces=frozenset({ns}))
    try:
        wait_until(lambda: stored(plane, "Sidecar", ns, "default"), 30,
                   what="Sidecar mirrored")
    finally:
        plane.stop()
    # This project's CRDs before Sidecars were served: no sidecars resource. The other
    # Istio kinds are watched and the initial sync completes.
    ext = client.ApiextensionsV1Api(api)
    ext.delete_custom_resource_definition("sidecars.networking.istio.io")
    def gone() -> bool:
        try:
            client.CustomObjectsApi(api).list_cluster_custom_object(
                "networking.istio.io", "v1", "sidecars")
        except ApiException as exc:
            return exc.status == 404
        return False
    wait_until(gone, 60, what="sidecars CRD gone")
    create(api, virtual_service("web", ["web"], [{"route": [{"destination": {
        "host": "web"}}]}], ns=ns))
    plane = kube_plane(api, namespaces=frozenset({ns}))
    try:
        wait_until(lambda: plane.run(lambda: plane.store.synced), 30, what="synced")
        wait_until(lambda: stored(plane, "VirtualService", ns, "web"), 30,
                   what="VirtualService mirrored without the Sidecar CRD")
    finally:
        plane.stop()
        install_crds(api)


def test_mirror_follows_creates_updates_deletes_and_rejects_bad_objects(
        api: Any, ns: str) -> None:
    install_crds(api)
    create(api, service("reviews", 9080, ns=ns))
    create(api, destination_rule("reviews", "reviews", {"v1": {"version": "v1"}}, ns=ns))
    plane = kube_plane(api, namespaces=frozenset({ns}))
    try:
        wait_until(lambda: plane.run(lambda: plane.store.synced), 30, what="initial sync")
        # Nothing was served before the initial lists: the first snapshot already has it.
        first = plane.run(lambda: plane.cache.snapshot.generation)
        assert first == 1
        assert f"outbound|9080|v1|reviews.{ns}.svc.cluster.local" in plane.cluster_names()
        # An object Istio would reject: logged, not mirrored, nothing else disturbed.
        with structlog.testing.capture_logs() as logs:
            create(api, virtual_service("bad", ["reviews"], [{"route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 30}]}],
                ns=ns) | {"spec": {"hosts": ["reviews"], "http": [{"route": [
                    {"destination": {"host": "reviews", "subset": "v1"}, "weight": 0},
                    {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}]}]}})
            create(api, service("ratings", 9080, ns=ns))
            wait_until(lambda: stored(plane, "Service", ns, "ratings"), 10)
            # The VirtualService comes through a watch of its own, maybe after the Service.
            wait_until(lambda: any(e["event"] == "object_rejected" for e in logs), 10,
                       what="the bad VirtualService rejected")
        rejected = [e for e in logs if e["event"] == "object_rejected"]
        assert rejected and rejected[0]["object"] == f"VirtualService {ns}/bad"
        assert "weights are all 0" in rejected[0]["errors"][0]
        assert stored(plane, "VirtualService", ns, "bad") is None
        core = client.CoreV1Api(api)
        core.patch_namespaced_service("ratings", ns, {"spec": {"ports": [
            {"name": "http", "port": 9080, "targetPort": 9999}]}})
        wait_until(lambda: stored(plane, "Service", ns, "ratings").ports[0].target_port
                   == 9999, 10, what="update mirrored")
        core.delete_namespaced_service("ratings", ns)
        wait_until(lambda: stored(plane, "Service", ns, "ratings") is None, 10,
                   what="delete mirrored")
    finally:
        plane.stop()


def test_secrets_are_mirrored_with_their_certificate_keys_only(api: Any, ns: str) -> None:
    """For DestinationRule credentialName: Secrets are watched (every type but
    service-account tokens) and only the keys Istio reads are kept."""
    core = client.CoreV1Api(api)
    core.create_namespaced_secret(ns, {
        "metadata": {"name": "bank-client"}, "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": "CERT", "tls.key": "KEY", "ca.crt": "CA",
                       "password": "not for us"}})
    plane = kube_plane(api, namespaces=frozenset({ns}))
    try:
        wait_until(lambda: plane.run(lambda: plane.store.synced), 30, what="initial sync")
        listed = stored(plane, "Secret", ns, "bank-client")
        assert listed is not None and listed.type == "kubernetes.io/tls"
        assert dict(listed.data) == {"tls.crt": b"CERT", "tls.key": b"KEY", "ca.crt": b"CA"}
        assert "KEY" not in repr(listed)
        core.create_namespaced_secret(ns, {"metadata": {"name": "shop-ca-cacert"},
                                           "type": "Opaque", "stringData": {"cacert": "CA2"}})
        wait_until(lambda: stored(plane, "Secret", ns, "shop-ca-cacert"), 10,
                   what="a created Opaque Secret mirrored")
        core.patch_namespaced_secret("bank-client", ns, {"stringData": {"tls.key": "KEY2"}})
        wait_until(lambda: stored(plane, "Secret", ns, "bank-client").get("tls.key")
                   == b"KEY2", 10, what="update mirrored")
        core.delete_namespaced_secret("bank-client", ns)
        wait_until(lambda: stored(plane, "Secret", ns, "bank-client") is None, 10,
                   what="delete mirrored")
    finally:
        plane.stop()


def test_credential_name_from_a_kubernetes_secret_reaches_envoy_over_sds(
        api: Any, ns: str, envoy: Any, ip: Any, tmp_path: Path) -> None:
    """MUTUAL TLS with the client certificate in a Secret of the API server: a real
    Envoy presents it to a TLS server that requires it."""
    install_crds(api)
    ca = TestCa(tmp_path / "pki")
    client_cert = ca.issue("kube-client", client=True)
    pod_ip = "192.0.2.250"  # outside what the fake kubelet hands out
    server = TlsUpstream(pod_ip, 18443, ca.issue("bank", dns=("bank.example.com",)),
                         client_ca=ca.path)
    core = client.CoreV1Api(api)
    core.create_namespaced_service(ns, {"metadata": {"name": "bank"}, "spec": {
        "ports": [{"name": "http", "port": 19443, "targetPort": 18443}]}})
    client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(ns, {
        "metadata": {"name": "bank-1", "labels": {"kubernetes.io/service-name": "bank"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 18443}],
        "endpoints": [{"addresses": [pod_ip], "conditions": {"ready": True}}]})
    core.create_namespaced_secret(ns, {
        "metadata": {"name": "bank-client"}, "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": client_cert.cert.read_text(),
                       "tls.key": client_cert.key.read_text(),
                       "ca.crt": ca.path.read_text()}})
    create(api, {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                 "metadata": {"name": "bank", "namespace": ns},
                 "spec": {"host": "bank", "trafficPolicy": {"tls": {
                     "mode": "MUTUAL", "credentialName": "bank-client",
                     "sni": "bank.example.com"}}}})
    plane = kube_plane(api, namespaces=frozenset({ns}))
    try:
        sidecar = ip()
        envoy("kube-sds", plane.port, instance_ip=sidecar, namespace=ns)
        wait_until(lambda: get(sidecar, 19443, f"bank.{ns}")[0] == 200, 60,
                   what="bank over mTLS with the Secret's certificate")
        status, body = get(sidecar, 19443, f"bank.{ns}")
        assert status == 200 and body["client"] == "kube-client", body
    finally:
        plane.stop()
        server.stop()


def test_revision_serves_only_labelled_namespaces(api: Any) -> None:
    core = client.CoreV1Api(api)
    blue, green = (f"t-{c}-{uuid.uuid4().hex[:6]}" for c in ("blue", "green"))
    for name, rev in ((blue, "blue"), (green, "green")):
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
            name=name, labels={"istio.io/rev": rev})))
        create(api, service("app", 80, ns=name))
    plane = kube_plane(api, revision="blue")
    try:
        wait_until(lambda: stored(plane, "Service", blue, "app"), 30, what="blue served")
        assert stored(plane, "Service", green, "app") is None
        # Tenants move: relabel green to blue, blue to nothing.
        core.patch_namespace(green, {"metadata": {"labels": {"istio.io/rev": "blue"}}})
        core.patch_namespace(blue, {"metadata": {"labels": {"istio.io/rev": None}}})
        wait_until(lambda: stored(plane, "Service", green, "app")
                   and stored(plane, "Service", blue, "app") is None, 10,
                   what="served namespaces follow the labels")
    finally:
        plane.stop()


def test_watches_recover_from_an_api_server_restart() -> None:
    """The API server goes away long enough for an uncapped backoff to grow past 6 s,
    then comes back on the same port and etcd: no watcher put its retry off past the
    backoff's cap (a second), each is back, logs `watch_recovered`, and changes flow
    again. How soon after /readyz is `benchmarks.kube_latency`'s figure. A cluster of its
    own: the shared one's controllers would come back on their own schedule."""
    from tests.kube.cluster import LocalCluster

    with LocalCluster() as own:
        api = load_api_client(str(own.kubeconfig_path))
        install_crds(api)  # their handlers come up after the core API's: 503 meanwhile
        ns = "default"
        create(api, service("before", 80, ns=ns))
        plane = kube_plane(api, namespaces=frozenset({ns}))
        try:
            wait_until(lambda: plane.run(lambda: plane.store.synced), 30,
                       what="initial sync")
            watchers = plane.kube.watchers
            assert {w.collection.kind for w in watchers} == {
                "Service", "EndpointSlice", "Pod", "Secret", "VirtualService", "DestinationRule",
                "Sidecar", "ConfigMap"}
            logsetup.configure("info", cache=False)
            with structlog.testing.capture_logs() as logs:
                own.stop_apiserver()
                wait_until(lambda: all(w.failed_attempts >= 6 for w in watchers), 30,
                           what="every watcher failing for a while")
                starting = time.monotonic()
                own.start_apiserver()  # returns once /readyz answers 200
                ready = time.monotonic()
                wait_until(lambda: all((w.recovered_at or 0) > starting for w in watchers),
                           60, what="every watcher recovered")
                create(api, service("after", 80, ns=ns))
                wait_until(lambda: stored(plane, "Service", ns, "after"), 30,
                           what="a Service created after the restart mirrored")
        finally:
            plane.stop()
    retries = [e["retry_in_s"] for e in logs if e["event"] == "watch_failed"]
    assert len(retries) >= 6 * len(watchers)
    assert max(retries) <= Backoff().cap, retries
    recovered = [e for e in logs if e["event"] == "watch_recovered"]
    assert {(e["kind"], e["namespace"]) for e in recovered} == {
        (w.collection.kind, w.namespace) for w in watchers}
    assert {w.namespace for w in watchers} == {ns, "istio-system"}  # the mesh config's
    assert all(e["log_level"] == "info" and e["attempts"] >= 6
               and e["outage_s"] > ready - starting for e in recovered), recovered


STATEFULSET_PORT = 19180


def statefulset(ns: str, replicas: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {
            "serviceName": "web", "replicas": replicas, "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "web", "image": "demo/web:1",
                    "ports": [{"name": "http", "containerPort": 8080}]}]},
            },
        },
    }


def headless_service(ns: str) -> dict[str, Any]:
    """The StatefulSet's governing Service: one DNS name per pod."""
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": ns},
        "spec": {"clusterIP": "None", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": STATEFULSET_PORT, "targetPort": 8080}]}}


def test_statefulset_pod_recreated_with_a_new_ip_reaches_every_envoy(
        api: Any, ns: str, envoy: Any, ip: Any) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_service(ns, headless_service(ns))
    client.AppsV1Api(api).create_namespaced_stateful_set(ns, statefulset(ns))
    kubelet = FakeKubelet(core, ns)
    plane = kube_plane(api, namespaces=frozenset({ns}))
    try:
        sidecars = [ip(), ip()]
        proxies = [envoy(f"sts-{i}", plane.port, instance_ip=addr, namespace=ns)
                   for i, addr in enumerate(sidecars)]
        svc = f"web.{ns}.svc.cluster.local"
        pod0 = f"web-0.web.{ns}.svc.cluster.local"
        cluster0 = f"outbound|{STATEFULSET_PORT}||{pod0}"

        def pods_answering() -> set[str]:
            return {get(sidecars[0], STATEFULSET_PORT, svc)[1].get("pod") for _ in range(12)}
        wait_until(lambda: pods_answering() == {"web-0", "web-1", "web-2"}, 60,
                   what="all three pods behind the headless service")
        for host in (pod0, f"web-0.web.{ns}", f"web-0.web.{ns}.svc", "web-0.web"):
            status, body = get(sidecars[0], STATEFULSET_PORT, host)
            assert status == 200 and body["pod"] == "web-0", (host, status, body)
        old = core.read_namespaced_pod("web-0", ns)
        old_ip = old.status.pod_ip
        assert all(p.cluster_hosts(cluster0) == {f"{old_ip}:8080"} for p in proxies)

        core.delete_namespaced_pod("web-0", ns)
        disc = client.DiscoveryV1Api(api)

        def slice_has_new_ip() -> str | None:
            for s in disc.list_namespaced_endpoint_slice(
                    ns, label_selector="kubernetes.io/service-name=web").items:
                for e in s.endpoints or []:
                    if e.hostname == "web-0" and e.addresses[0] != old_ip and (
                            e.conditions.ready):
                        return e.addresses[0]
            return None
        new_ip = wait_until(slice_has_new_ip, 60, interval=0.005,
                            what="EndpointSlice with web-0's new IP")
        # How soon after the EndpointSlice: `benchmarks.kube_latency`'s figure.
        wait_until(lambda: all(p.cluster_hosts(cluster0) == {f"{new_ip}:8080"}
                               for p in proxies), 30, interval=0.01,
                   what="every Envoy holding only the new IP")
        for p in proxies:
            hosts = {h for c in (cluster0, f"outbound|{STATEFULSET_PORT}||{svc}")
                     for h in p.cluster_hosts(c)}
            assert f"{old_ip}:8080" not in hosts
        status, body = get(sidecars[1], STATEFULSET_PORT, pod0)
        assert status == 200 and body["pod"] == "web-0"
        assert kubelet.workloads  # the new web-0 answered from its new address
        assert any(w.ip == new_ip and w.requests for w in kubelet.workloads.values())
        wait_until(lambda: pods_answering() == {"web-0", "web-1", "web-2"}, 10)
        assert not kubelet.errors, kubelet.errors
    finally:
        plane.stop()
        kubelet.stop()


def test_serve_with_kubeconfig(cluster: Any, api: Any, ns: str, tmp_path: Path) -> None:
    """`controlplane serve --kubeconfig` as a user runs it, answering a real ADS client."""
    import asyncio
    import signal
    import subprocess
    import sys

    from controlplane.xds import types
    from tests.ads_client import CATCH_ALL_CLUSTERS, AdsClient, names_of
    from tests.harness import serving

    create(api, service("api", 8080, ns=ns))
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "controlplane.cli", "--log-format", "json",
                             "serve", "--kubeconfig", str(cluster.kubeconfig_path),
                             "--namespaces", ns, "--xds-address", "127.0.0.1:0",
                             "--admin-address", "127.0.0.1:0", "--http-address", "127.0.0.1:0"],
                            stdout=log, stderr=log)

    async def fetch_clusters() -> list[str]:
        ads = AdsClient(port, "kube-cli")
        await ads.open()
        try:
            await ads.send(types.CLUSTER)
            return names_of(await ads.recv(timeout=10))
        finally:
            await ads.close()
    try:
        port = serving(tmp_path / "serve.log")["xds_port"]
        names = wait_until(lambda: asyncio.run(fetch_clusters()), 30, interval=0.5,
                           what="CDS from controlplane serve --kubeconfig")
        assert names == [f"outbound|8080||api.{ns}.svc.cluster.local", *CATCH_ALL_CLUSTERS]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert '"event": "initial_sync_done"' in text, text[-2000:]
    # --log-format json: every line is JSON, stdlib logging and warnings included (the
    # local API server's certificate is not verified: urllib3 warns on every request).
    lines = text.splitlines()
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            pytest.fail(f"not JSON in --log-format json output: {line!r}")
    warnings = [json.loads(line) for line in lines if "InsecureRequestWarning" in line]
    assert warnings and warnings[0]["logger"] == "py.warnings", text[-2000:]


def test_statefulset_pod_replacement_pushes_endpoints_only_and_never_404s(
        api: Any, ns: str, envoy: Any, ip: Any) -> None:
    """web-0 deleted and replaced by the real StatefulSet and EndpointSlice controllers
    (terminating -> deleted -> recreated pending -> ready): its per-pod host keeps its
    virtual host and cluster throughout (503 while no pod is ready, never 404), and the
    Envoy is sent endpoints alone: no cluster, listener or route configuration."""
    import threading

    from controlplane.status.sync import ProxySync
    from controlplane.xds import types

    core = client.CoreV1Api(api)
    core.create_namespaced_service(ns, headless_service(ns))
    client.AppsV1Api(api).create_namespaced_stateful_set(ns, statefulset(ns, replicas=2))
    kubelet = FakeKubelet(core, ns, first_host=60)
    plane = kube_plane(api, namespaces=frozenset({ns}))
    stop_polling = threading.Event()
    try:
        sidecar = ip()
        proxy = envoy("sts-replace", plane.port, instance_ip=sidecar, namespace=ns)
        pod0 = f"web-0.web.{ns}.svc.cluster.local"
        for host in (pod0, f"web-1.web.{ns}.svc.cluster.local"):
            wait_until(lambda h=host: get(sidecar, STATEFULSET_PORT, h)[0] == 200, 60,
                       what=f"{host} answering")
        old_ip = core.read_namespaced_pod("web-0", ns).status.pod_ip

        def settled() -> bool:  # everything published and answered by the Envoy
            def check() -> bool:
                snap = plane.cache.snapshot
                streams = plane.registry.by_node("sts-replace")
                return (plane.store.first_unseen_change is None and snap is not None
                        and all(s.complete_generation == snap.generation
                                and all(t.answered for t in s.types.values())
                                for s in streams) and bool(streams))
            return plane.run(check)
        wait_until(settled, 30, what="the Envoy in step with the control plane")
        sent: list[str] = []

        def record(event: str, sync: ProxySync, type_url: str) -> None:
            if event == "sent" and sync.node_id == "sts-replace":
                sent.append(types.short(type_url))
        plane.run(lambda: plane.registry.listeners.append(record))

        statuses: list[tuple[int, Any]] = []

        def poll() -> None:  # the per-pod host, all through the replacement
            while not stop_polling.is_set():
                try:
                    statuses.append(get(sidecar, STATEFULSET_PORT, pod0, timeout=5))
                except OSError as exc:
                    statuses.append((0, repr(exc)))
                stop_polling.wait(0.01)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()

        core.delete_namespaced_pod("web-0", ns)

        def new_pod_answers() -> bool:
            status, body = get(sidecar, STATEFULSET_PORT, pod0)
            return status == 200 and isinstance(body, dict) and body["pod"] == "web-0" and (
                not body["address"].startswith(f"{old_ip}:"))
        wait_until(new_pod_answers, 60, interval=0.05, what="the new web-0 answering")
        wait_until(settled, 30, what="the Envoy in step after the replacement")
        stop_polling.set()
        poller.join(10)
        codes = [s for s, _ in statuses]
        print(f"per-pod host during the replacement: {len(codes)} requests, "
              f"{ {c: codes.count(c) for c in sorted(set(codes))} }; pushed: "
              f"{ {t: sent.count(t) for t in sorted(set(sent))} }")
        assert 404 not in codes, [b for s, b in statuses if s == 404][:3]
        # Nor did the catch-all virtual host ever answer for it (ALLOW_ANY: the
        # PassthroughCluster, whose 503 would look like the no-ready-pod one).
        none_healthy = "cluster.PassthroughCluster.upstream_cx_none_healthy"
        assert proxy.stats(none_healthy).get(none_healthy, 0) == 0
        assert 503 in codes  # it did go through a time with no ready pod
        assert [t for t in sent if t != "EDS"] == [], sent
        assert "EDS" in sent
        assert not kubelet.errors, kubelet.errors
    finally:
        stop_polling.set()
        plane.stop()
        kubelet.stop()


def test_the_mesh_config_map_is_watched_live_whatever_namespaces_are_served(
        api: Any, ns: str) -> None:
    """istio-system/istio: read although only `ns` is served, changes applied live, a
    wrong value rejected naming the field (the last good one kept), deleted → defaults;
    istio-system's other ConfigMaps never reach the store."""
    from controlplane.model.mesh_config import ROOT_NAMESPACE
    from tests.manifests import mesh_config

    core = client.CoreV1Api(api)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
            name=ROOT_NAMESPACE)))
    except ApiException as exc:
        if exc.status != 409:
            raise
    core.create_namespaced_config_map(ROOT_NAMESPACE, mesh_config(
        {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}))
    core.create_namespaced_config_map(ROOT_NAMESPACE, mesh_config(
        "outboundTrafficPolicy: {mode: nonsense}", name="istio-sidecar-injector"))

    def mode(plane: ControlPlane) -> str:
        return str(plane.run(lambda: plane.store.mesh().config.outbound_traffic_policy))

    with structlog.testing.capture_logs() as logs:
        plane = kube_plane(api, namespaces=frozenset({ns}))
        try:
            wait_until(lambda: plane.run(lambda: plane.store.synced), 30, what="synced")
            wait_until(lambda: mode(plane) == "REGISTRY_ONLY", 10, what="mesh config read")
            core.replace_namespaced_config_map("istio", ROOT_NAMESPACE, mesh_config(
                {"outboundTrafficPolicy": {"mode": "ALLOW_ANY"}}))
            wait_until(lambda: mode(plane) == "ALLOW_ANY", 10, what="the change applied")
            core.replace_namespaced_config_map("istio", ROOT_NAMESPACE, mesh_config(
                {"outboundTrafficPolicy": {"mode": "BLOCK"}}))
            wait_until(lambda: [e for e in logs if e["event"] == "object_rejected"], 10,
                       what="the wrong value rejected")
            assert mode(plane) == "ALLOW_ANY"
            core.replace_namespaced_config_map("istio", ROOT_NAMESPACE, mesh_config(
                {"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}))
            wait_until(lambda: mode(plane) == "REGISTRY_ONLY", 10, what="a good one again")
            core.delete_namespaced_config_map("istio", ROOT_NAMESPACE)
            wait_until(lambda: mode(plane) == "ALLOW_ANY", 10, what="Istio's default again")
            assert plane.run(lambda: plane.store.objects("ConfigMap")) == []
        finally:
            plane.stop()
            core.delete_namespaced_config_map("istio-sidecar-injector", ROOT_NAMESPACE)
    [entry] = [e for e in logs if e["event"] == "object_rejected"]
    assert entry["object"] == f"ConfigMap {ROOT_NAMESPACE}/istio"
    assert any("data.mesh.outboundTrafficPolicy.mode" in e for e in entry["errors"]), entry
