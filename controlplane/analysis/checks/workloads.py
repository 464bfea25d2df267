"""Selectors that select nothing: a Service's (CP0150), a DestinationRule subset's
(CP0103), a Sidecar's workloadSelector (CP0151).

Read from the Pods (any phase: a pod not ready yet is still selected), so a selector
that matches pods about to start is not reported; and only in namespaces where the
input holds Pods at all — a directory of Deployments has none, and every selector would
look empty. A Service without a selector has its
endpoints managed by hand (Endpoints, EndpointSlices) and is not checked; a subset is
checked against its service's pods — its selected pods, or the pods its endpoints name —
and not at all when the service has none (CP0150 says so once).
"""

from __future__ import annotations

from collections.abc import Iterator

from controlplane.analysis.checks.common import destination_rules, finding, of_kind, ref
from controlplane.analysis.findings import Finding
from controlplane.analysis.inputs import Inputs
from controlplane.model.service import Service
from controlplane.model.sidecar import Sidecar

Labels = frozenset[tuple[str, str]]


def _show(labels: Labels) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels))


def _selects_none(inputs: Inputs, namespace: str, selector: Labels) -> bool:
    """Whether the namespace holds Pods and none carries the selector's labels (an
    empty selector selects every pod)."""
    index = inputs.pods.get(namespace)
    return index is not None and bool(selector) and not index.matching(selector)


def selectors(inputs: Inputs) -> Iterator[Finding]:
    for service in of_kind(inputs, Service):
        if service.selector and _selects_none(inputs, service.meta.namespace,
                                              service.selector):
            yield finding(
                "CP0150", service, "spec.selector",
                f"no pod in namespace {service.meta.namespace} has the labels "
                f"{_show(service.selector)}: the service has no endpoints, and requests "
                "to it answer 503", "fix the selector (or the pods' labels)")
    for sidecar in of_kind(inputs, Sidecar):
        chosen = sidecar.workload_selector
        if chosen is not None and _selects_none(inputs, sidecar.meta.namespace, chosen):
            yield finding(
                "CP0151", sidecar, "spec.workloadSelector",
                f"no pod in namespace {sidecar.meta.namespace} has the labels "
                f"{_show(chosen)}: the Sidecar applies to no proxy",
                "fix the workloadSelector's labels (or the pods')")


def subsets(inputs: Inputs) -> Iterator[Finding]:
    mesh = inputs.mesh
    for dr, fqdn in destination_rules(inputs):
        service = mesh.services.get(fqdn)
        if service is None or not dr.subsets:
            continue
        index = inputs.pods.get(service.meta.namespace)
        members: list[Labels]
        if service.selector:
            members = ([p.meta.labels for p in index.matching(service.selector)]
                       if index is not None else [])
        else:  # endpoints by hand: the pods they name, as the Mesh read them
            members = [ep.labels for port in service.ports
                       for ep in mesh.endpoints.get((fqdn, port.port), ()) if ep.labels]
        if not members:
            continue
        for s, subset in enumerate(dr.subsets):
            if subset.labels and not any(subset.labels <= labels for labels in members):
                yield finding(
                    "CP0103", dr, f"spec.subsets[{s}].labels",
                    f"subset {subset.name!r}: none of the {len(members)} pods of {fqdn} has "
                    f"the labels {_show(subset.labels)}; routes to the subset answer 503",
                    f"fix the subset's labels to match pods of {ref(service)} (or the "
                    "pods' labels)")


CHECKS = [selectors, subsets]
