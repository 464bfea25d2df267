"""How soon Kubernetes changes reach the control plane and the Envoys, against a real
API server and the real StatefulSet and EndpointSlice controllers (tests/kube/cluster.py,
binaries from tools/kube/build.sh), as tests/test_kubernetes.py runs them; the tests
check the behaviour, this measures the time.

    unshare --net sh -c 'ip link set lo up && ip route add local 192.0.2.0/24 dev lo &&
        exec .venv/bin/python -m benchmarks.kube_latency [--repeats 5]'

(Pods get 192.0.2.x addresses, which the API server accepts in EndpointSlices; the
network namespace makes that range local, as scripts/test does for the suite.)

- API-server restart: a cluster of its own, the API server stopped until every watcher
  failed 6 times, then started: per watcher, the process start -> its first answer, and
  the start -> /readyz answering 200 (the server answers requests before /readyz
  passes, so watchers are often back before it). The watchers' backoff is capped at 1 s.
- pod moved: a StatefulSet of 3 behind a headless Service, 2 Envoys (SotW); web-0 is
  deleted and recreated with a new IP: the EndpointSlice holding the new IP (polled
  every 5 ms) -> every Envoy holding only the new IP for web-0's own cluster (polled
  every 5 ms on the admin API). Includes the watch, the debounce (0.1 s quiet) and the
  push.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
import uuid
from functools import partial
from typing import Any

from kubernetes import client

from benchmarks.run import pct
from controlplane import log
from controlplane.sources.kubernetes import load_api_client
from tests.harness import Envoy, iter_ips, wait_until
from tests.kube.cluster import LocalCluster
from tests.kube.kubelet import FakeKubelet
from tests.test_kubernetes import (
    STATEFULSET_PORT,
    headless_service,
    install_crds,
    kube_plane,
    statefulset,
)


def synced(plane: Any) -> bool:
    return bool(plane.run(lambda: plane.store.synced))


def restarts(repeats: int) -> tuple[list[float], list[float]]:
    """(seconds from the API server's start to each watcher back, and to /readyz)."""
    back: list[float] = []
    starts: list[float] = []
    with LocalCluster() as own:
        api = load_api_client(str(own.kubeconfig_path))
        install_crds(api)
        plane: Any = kube_plane(api, namespaces=frozenset({"default"}))  # attrs set late
        try:
            wait_until(lambda: synced(plane), 60, what="initial sync")
            watchers = plane.kube.watchers
            for _ in range(repeats):
                own.stop_apiserver()
                wait_until(lambda: all(w.failed_attempts >= 6 for w in watchers), 60,
                           what="every watcher failing for a while")
                starting = time.monotonic()
                own.start_apiserver()  # returns once /readyz answers 200
                ready = time.monotonic()

                def recovered(since: float = starting) -> bool:
                    return all((w.recovered_at or 0) > since for w in watchers)
                wait_until(recovered, 60, interval=0.005, what="every watcher recovered")
                back += [w.recovered_at - starting for w in watchers]
                starts.append(ready - starting)
        finally:
            plane.stop()
    return back, starts


def pod_moves(repeats: int) -> list[float]:
    """Seconds from the EndpointSlice with web-0's new IP to every Envoy holding it."""
    took: list[float] = []
    with LocalCluster(controllers=True) as cluster:
        api = load_api_client(str(cluster.kubeconfig_path))
        # Any: the client takes the manifests as dicts, which its stubs do not say
        core: Any = client.CoreV1Api(api)
        apps: Any = client.AppsV1Api(api)
        disc = client.DiscoveryV1Api(api)
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        core.create_namespaced_service(ns, headless_service(ns))
        apps.create_namespaced_stateful_set(ns, statefulset(ns))
        kubelet = FakeKubelet(core, ns)
        plane: Any = kube_plane(api, namespaces=frozenset({ns}))
        ips = iter_ips(10)
        proxies: list[Envoy] = []
        try:
            for i in range(2):
                proxies.append(Envoy(f"sts-{i}", plane.port, instance_ip=next(ips),
                                     namespace=ns))
                proxies[-1].wait_ready()
            cluster0 = f"outbound|{STATEFULSET_PORT}||web-0.web.{ns}.svc.cluster.local"

            def web0_ip() -> str | None:
                pod = core.read_namespaced_pod("web-0", ns)
                return pod.status.pod_ip if pod.status and pod.status.pod_ip else None

            def everywhere(addr: str) -> bool:
                return all(p.cluster_hosts(cluster0) == {f"{addr}:8080"} for p in proxies)

            for _ in range(repeats):
                old_ip: str = wait_until(web0_ip, 60, what="web-0 running")
                wait_until(partial(everywhere, old_ip), 60, what="web-0 in every Envoy")
                core.delete_namespaced_pod("web-0", ns)

                def slice_has_new_ip(old: str = old_ip) -> str | None:
                    for s in disc.list_namespaced_endpoint_slice(
                            ns, label_selector="kubernetes.io/service-name=web").items:
                        for e in s.endpoints or []:
                            if (e.hostname == "web-0" and e.addresses[0] != old
                                    and e.conditions and e.conditions.ready):
                                return str(e.addresses[0])
                    return None
                new_ip: str = wait_until(slice_has_new_ip, 60, interval=0.005,
                                         what="EndpointSlice with web-0's new IP")
                updated = time.monotonic()
                wait_until(partial(everywhere, new_ip), 60, interval=0.005,
                           what="every Envoy holding only the new IP")
                took.append(time.monotonic() - updated)
        finally:
            for p in proxies:
                p.stop()
            plane.stop()
            kubelet.stop()
    return took


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    try:
        with socket.socket() as s:
            s.bind(("192.0.2.1", 0))
    except OSError:
        raise SystemExit("192.0.2.0/24 is not local here: run this in the network "
                         "namespace shown in the module docstring (--help)") from None
    log.configure("error")
    back, starts = restarts(a.repeats)
    moves = pod_moves(a.repeats)
    print(f"real API server (tests/kube/cluster.py), {a.repeats} repeats; seconds")
    print(f"  API-server restart, start -> watcher back ({len(back)} recoveries): "
          f"p50 {pct(back, 50):.3f}  p99 {pct(back, 99):.3f}  max {max(back):.3f}")
    print(f"  API-server restart, start -> /readyz: median {statistics.median(starts):.3f}  "
          f"({min(starts):.3f}-{max(starts):.3f})")
    print(f"  pod moved, EndpointSlice -> every Envoy ({len(moves)} moves): "
          f"median {statistics.median(moves):.3f}  ({min(moves):.3f}-{max(moves):.3f})")
    print("reproduce: unshare --net sh -c 'ip link set lo up && ip route add local "
          "192.0.2.0/24 dev lo && exec .venv/bin/python -m benchmarks.kube_latency "
          f"--repeats {a.repeats}'")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
