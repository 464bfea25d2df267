"""Headless services (clusterIP: None) served differently than written (CP0140).

Here a headless service gets an EDS cluster of its pods and each pod hostname
(`web-0.web.ns.svc.cluster.local`) a virtual host straight to that pod
(translate/headless.py). Two things follow that people do not expect:

- a VirtualService for the service's host routes the service's name only: requests to
  a pod's own name go straight to the pod, without its routes, retries or faults;
- a port that is not HTTP cannot tell a pod's name from the service's (one listener per
  port number, no Host header), and a headless service has no cluster IP to be told
  apart by: connections to `web-0.web` on a TCP port reach whichever service the
  port's listener serves, not that pod.

A DestinationRule's load balancer, outlier detection or subsets on a headless service are
not reported: Istio passes headless traffic through to the address the client resolved
(so those settings do nothing there), but here the service's cluster is an EDS cluster of
its pods and they apply as written (README, headless services).
"""

from __future__ import annotations

from collections.abc import Iterator

from controlplane.analysis.checks.common import finding, of_kind
from controlplane.analysis.findings import Finding
from controlplane.analysis.inputs import Inputs
from controlplane.model.service import Protocol, Service
from controlplane.model.virtual_service import VirtualService


def headless(inputs: Inputs) -> Iterator[Finding]:
    mesh = inputs.mesh
    for vs in of_kind(inputs, VirtualService):
        if not vs.http or not vs.applies_to_sidecars:
            continue
        for k, host in enumerate(vs.hosts):
            fqdn = mesh.resolve_host(host, vs.meta.namespace)
            pods = mesh.pod_hostnames.get(fqdn, ())
            if not pods:
                continue
            example = f"{pods[0]}.{fqdn}"
            yield finding(
                "CP0140", vs, f"spec.hosts[{k}]",
                f"{fqdn} is headless: its routes apply to the service's name only; requests "
                f"to a pod's own name ({example}) go straight to that pod without them",
                "if the per-pod names need these policies, add them to the callers or "
                "reach the pods through the service name")
    for service in of_kind(inputs, Service):
        if not service.headless or not mesh.pod_hostnames.get(service.fqdn):
            continue
        for i, port in enumerate(service.ports):
            if port.l7.is_http or port.l7 is Protocol.UNSUPPORTED:
                continue
            yield finding(
                "CP0140", service, f"spec.ports[{i}]",
                f"port {port.port} is {port.l7.value}: a pod's own name "
                f"({mesh.pod_hostnames[service.fqdn][0]}.{service.fqdn}) cannot be told "
                "apart from the service's on it (no Host header, no cluster IP), so such "
                "connections are not sent to that pod",
                "name the port http-… if it speaks HTTP; for TCP, connect to the pod "
                "through a port no other service uses, or bypass the sidecar for it")


CHECKS = [headless]
