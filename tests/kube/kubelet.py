"""A fake kubelet (and scheduler) for a real API server with no nodes: binds pending pods
to a fake Node, gives each an IP and a Ready condition, and runs a real HTTP server on
that IP for it, so traffic through Envoy reaches "the pod". Deleted pods lose their
server and their deletion is confirmed, as a kubelet does once containers stopped.

Pod IPs come from 192.0.2.0/24: the API server refuses loopback addresses in
EndpointSlices, so the suite runs in a network namespace of its own where that range is
local (scripts/test sets it up).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from controlplane.samples.workload import Workload

NODE = "fake-node-1"
POD_NET = "192.0.2."


def create_node(v1: client.CoreV1Api) -> None:
    try:
        v1.create_node(client.V1Node(metadata=client.V1ObjectMeta(
            name=NODE, labels={"kubernetes.io/hostname": NODE})))
    except ApiException as exc:
        if exc.status != 409:
            raise


class FakeKubelet:
    def __init__(self, v1: client.CoreV1Api, namespace: str, port: int = 8080,
                 first_host: int = 10) -> None:
        self.v1, self.namespace, self.port = v1, namespace, port
        self.next_host = first_host
        self.ips: dict[str, str] = {}  # pod uid -> IP
        self.workloads: dict[str, Workload] = {}  # pod uid -> its server
        self.ready_at: dict[str, float] = {}  # pod uid -> monotonic time it became Ready
        self._stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._run, daemon=True, name="fake-kubelet")
        create_node(v1)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # kept for the test to see; the loop goes on
                self.errors.append(repr(exc))
            self._stop.wait(0.05)

    def step(self) -> None:
        for pod in self.v1.list_namespaced_pod(self.namespace).items:
            name, uid = pod.metadata.name, pod.metadata.uid
            if pod.metadata.deletion_timestamp:
                self._terminate(name, uid)
            elif not pod.spec.node_name:
                # The scheduler's job. The client cannot decode the Status it answers.
                self.v1.create_namespaced_pod_binding(
                    name, self.namespace, client.V1Binding(
                        metadata=client.V1ObjectMeta(name=name, uid=uid),
                        target=client.V1ObjectReference(kind="Node", api_version="v1",
                                                        name=NODE)),
                    _preload_content=False)
            elif uid not in self.ready_at:
                self._start(pod)

    def _start(self, pod: Any) -> None:
        uid, name = pod.metadata.uid, pod.metadata.name
        ip = self.ips.setdefault(uid, f"{POD_NET}{self.next_host}")
        if ip == f"{POD_NET}{self.next_host}":
            self.next_host += 1
        labels = pod.metadata.labels or {}
        if uid not in self.workloads:
            self.workloads[uid] = Workload(ip, self.port, labels.get("app", "?"), name,
                                           labels.get("version", "v1"))
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.v1.patch_namespaced_pod_status(name, self.namespace, {"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "startTime": stamp,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": stamp}
                           for t in ("PodScheduled", "Initialized", "ContainersReady",
                                     "Ready")],
            "containerStatuses": [{
                "name": c.name, "image": c.image, "imageID": "", "ready": True,
                "restartCount": 0, "started": True, "state": {"running": {"startedAt": stamp}},
            } for c in pod.spec.containers],
        }})
        self.ready_at[uid] = time.monotonic()

    def _terminate(self, name: str, uid: str) -> None:
        workload = self.workloads.pop(uid, None)
        if workload is not None:
            workload.stop()
        try:
            self.v1.delete_namespaced_pod(
                name, self.namespace, grace_period_seconds=0,
                body=client.V1DeleteOptions(grace_period_seconds=0,
                                            preconditions=client.V1Preconditions(uid=uid)))
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(5)
        for workload in self.workloads.values():
            workload.stop()
