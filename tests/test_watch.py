"""The watch loop through the faults a real API server will not produce on demand, via
a protocol-faithful double over real HTTP: 410 mid-watch, ERROR events, streams cut
mid-line, stalled connections, failing requests, a restart, CRDs appearing. After each,
the mirror must equal the server's state."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from controlplane import log as logsetup
from controlplane.sources.kubernetes import load_api_client
from controlplane.sources.watch import Backoff
from tests.ads_client import CATCH_ALL_CLUSTERS
from tests.harness import ControlPlane, wait_until
from tests.kube.double import FakeApiServer
from tests.manifests import service, virtual_service


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    with FakeApiServer(bookmark_interval=0.5) as server:
        yield server


def start_plane(server: FakeApiServer, tmp_path: Path, **kwargs: Any) -> ControlPlane:
    api = load_api_client(str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    # Short watches and a short read timeout: every fault is met within a second or two.
    return ControlPlane(kubernetes={"api_client": api, "watch_timeout": 1,
                                    "read_timeout": 1.5, "crd_retry": 0.3, **kwargs})


def mirrored(plane: ControlPlane, kind: str) -> dict[str, Any]:
    return plane.run(lambda: {f"{o.meta.namespace}/{o.meta.name}": o
                              for o in plane.store.objects(kind)})


def server_state(server: FakeApiServer, kind: str = "Service") -> set[str]:
    return {f"{o['metadata'].get('namespace', 'default')}/{o['metadata']['name']}"
            for o in server.objects("v1", kind)}


def converged(plane: ControlPlane, server: FakeApiServer, kind: str = "Service") -> bool:
    mirror = mirrored(plane, kind)
    if set(mirror) != server_state(server, kind):
        return False
    return all(mirror[f"{o['metadata'].get('namespace', 'default')}/{o['metadata']['name']}"]
               .ports[0].port == o["spec"]["ports"][0]["port"]
               for o in server.objects("v1", kind))


@pytest.fixture
def plane(api_server: FakeApiServer, tmp_path: Path) -> Iterator[ControlPlane]:
    for name in ("a", "b", "c"):
        api_server.upsert("v1", "Service", service(name, 80))
    p = start_plane(api_server, tmp_path)
    wait_until(lambda: p.run(lambda: p.store.synced), 10, what="initial sync")
    assert converged(p, api_server)
    yield p
    p.stop()


def watches_of(server: FakeApiServer, plural: str = "services") -> int:
    return sum(1 for _, path, q in list(server.requests)
               if path.endswith(plural) and q.get("watch") in ("1", "true"))


def lists_of(server: FakeApiServer, plural: str = "services") -> int:
    return sum(1 for _, path, q in list(server.requests)
               if path.endswith(plural) and q.get("watch") not in ("1", "true"))


def arm(server: FakeApiServer, fault: str) -> None:
    """Queue a fault for the next Service watch and wait until that watch is open, so the
    changes made next go through the faulty stream."""
    server.fail_next_watch(fault, kind="Service", after_events=1)
    wait_until(lambda: server.pending_faults() == 0, 10, what="the faulty watch opened")


def test_gone_mid_watch_relists(plane: ControlPlane, api_server: FakeApiServer) -> None:
    lists = lists_of(api_server)
    arm(api_server, "gone")
    api_server.upsert("v1", "Service", service("d", 80))  # then ERROR 410 on the stream
    wait_until(lambda: lists_of(api_server) > lists, 10, what="a relist")
    api_server.delete("v1", "Service", "default", "b")
    wait_until(lambda: converged(plane, api_server), 10, what="mirror == server")


def test_deletions_missed_while_disconnected_disappear(plane: ControlPlane,
                                                      api_server: FakeApiServer) -> None:
    """The watch position was compacted away while the server was unreachable: the watch
    answers 410, the relist no longer holds b, and b leaves the mirror."""
    lists = lists_of(api_server)
    api_server.stop()
    api_server.delete("v1", "Service", "default", "b")
    api_server.upsert("v1", "Service", service("d", 80))
    api_server.compact()
    api_server.start()
    wait_until(lambda: lists_of(api_server) > lists, 30, what="a relist")
    wait_until(lambda: converged(plane, api_server), 10, what="mirror == server")
    assert "default/b" not in mirrored(plane, "Service")


@pytest.mark.parametrize("fault", ["error", "cut", "stall", "http500"])
def test_watch_faults_resume_without_losing_events(plane: ControlPlane,
                                                   api_server: FakeApiServer,
                                                   fault: str) -> None:
    with structlog.testing.capture_logs() as logs:
        if fault == "http500":  # the watch request itself fails: nothing to stream through
            api_server.fail_next_watch(fault, kind="Service")
        else:
            arm(api_server, fault)
        api_server.upsert("v1", "Service", service("a", 81))  # delivered before the fault
        api_server.upsert("v1", "Service", service("e", 80))  # lost to it, then replayed
        api_server.delete("v1", "Service", "default", "c")
        wait_until(lambda: converged(plane, api_server), 10, what="mirror == server")
        wait_until(lambda: any(e["event"] == "watch_failed" for e in logs), 5)
    failed = [e for e in logs if e["event"] == "watch_failed"]
    assert failed[0]["collection"] == "Service/*"


def test_failing_list_is_retried_before_the_initial_sync(api_server: FakeApiServer,
                                                         tmp_path: Path) -> None:
    api_server.upsert("v1", "Service", service("a", 80))
    api_server.fail_next_list(kind="Service", code=500)
    api_server.fail_next_list(kind="Service", code=503)
    plane = start_plane(api_server, tmp_path)
    try:
        wait_until(lambda: plane.run(lambda: plane.store.synced), 15, what="initial sync")
        assert converged(plane, api_server)
        # The first snapshot is the full one: nothing was served from a partial load.
        assert plane.run(lambda: plane.cache.snapshot.generation) == 1
        assert plane.cluster_names() == {"outbound|80||a.default.svc.cluster.local",
                                         *CATCH_ALL_CLUSTERS}
    finally:
        plane.stop()


def test_api_server_restart_is_survived(plane: ControlPlane, api_server: FakeApiServer) -> None:
    api_server.stop()
    api_server.upsert("v1", "Service", service("f", 80))  # changed while it was down
    api_server.delete("v1", "Service", "default", "a")
    api_server.start()
    wait_until(lambda: converged(plane, api_server), 30, what="mirror == server after restart")


def test_istio_crds_appearing_later_are_picked_up(api_server: FakeApiServer,
                                                  tmp_path: Path) -> None:
    api_server.upsert("v1", "Service", service("reviews", 80))
    plane = start_plane(api_server, tmp_path)
    try:
        wait_until(lambda: plane.run(lambda: plane.store.synced), 10, what="initial sync")
        api_server.serve_group("networking.istio.io", ["v1beta1", "v1alpha3"])
        vs = virtual_service("reviews", ["reviews"],
                             [{"route": [{"destination": {"host": "reviews"}}]}])
        vs["apiVersion"] = "networking.istio.io/v1beta1"
        api_server.upsert("networking.istio.io/v1beta1", "VirtualService", vs)
        wait_until(lambda: "default/reviews" in mirrored(plane, "VirtualService"), 10,
                   what="VirtualService from v1beta1 (v1 not served)")
    finally:
        plane.stop()


def test_watches_retry_within_the_backoff_cap_and_say_when_back(
        plane: ControlPlane, api_server: FakeApiServer) -> None:
    """An outage long enough for an uncapped backoff to grow past 6 s: no retry is put
    off past the cap (a second), so once the server answers every watcher is back on its
    next try, starts its backoff over, and says so at info level. How soon is
    `python -m benchmarks.watch_recovery`'s figure."""
    logsetup.configure("info", cache=False)
    watchers = plane.kube.watchers
    with structlog.testing.capture_logs() as logs:
        api_server.stop()
        wait_until(lambda: all(w.failed_attempts >= 6 for w in watchers), 30,
                   what="every watcher failing for a while")
        down = time.monotonic()
        api_server.start()
        back = time.monotonic()
        wait_until(lambda: all((w.recovered_at or 0) > back for w in watchers), 30,
                   what="every watcher recovered")
        api_server.upsert("v1", "Service", service("after", 80))
        wait_until(lambda: converged(plane, api_server), 30, what="mirror == server")
    retries = [e["retry_in_s"] for e in logs if e["event"] == "watch_failed"]
    assert len(retries) >= 6 * len(watchers)
    assert max(retries) <= Backoff().cap, retries
    assert all(w.backoff.failures == 0 for w in watchers)
    recovered = {e["kind"]: e for e in logs if e["event"] == "watch_recovered"}
    assert set(recovered) == {w.collection.kind for w in watchers}
    service_log = recovered["Service"]
    assert service_log["log_level"] == "info" and service_log["namespace"] == "*"
    assert service_log["attempts"] >= 6
    assert service_log["outage_s"] >= back - down


def test_retry_after_is_left_to_the_watchers_backoff(api_server: FakeApiServer,
                                                     tmp_path: Path) -> None:
    """A starting API server answers 503 with "Retry-After: 5". Honoured inside the
    request (urllib3's default), the watcher slept there 5 s past the server's recovery
    and never saw the 503; here the 503 reaches the watcher, whose own backoff (capped
    at a second) retries it. How soon it syncs is `benchmarks.watch_recovery`'s."""
    logsetup.configure("info", cache=False)
    api_server.upsert("v1", "Service", service("a", 80))
    api_server.fail_next_list(kind="Service", code=503, retry_after=5)
    with structlog.testing.capture_logs() as logs:
        plane = start_plane(api_server, tmp_path)
        try:
            wait_until(lambda: plane.run(lambda: plane.store.synced), 30,
                       what="initial sync")
            assert api_server.pending_faults() == 0
            assert converged(plane, api_server)
        finally:
            plane.stop()
    [failed] = [e for e in logs
                if e["event"] == "watch_failed" and e["collection"] == "Service/*"]
    assert "503" in failed["error"], failed
    assert failed["retry_in_s"] <= Backoff().cap, failed
    service_lists = [r for r in api_server.requests
                     if r[1] == "/api/v1/services" and "watch" not in r[2]]
    assert len(service_lists) == 2, service_lists  # the 503, then the watcher's retry
