"""Localities ("region/zone/subzone"): where a proxy runs and where an endpoint runs.

A proxy's locality is its Envoy node's `locality`, else the locality label of its
workload (LABELS metadata). An endpoint's is its pod's locality label, else the zone
its EndpointSlice gives (Kubernetes copies it from the node): the region is then
unknown (it lives on Node objects, which are not watched) and left empty, which
`translate/locality.py` reads as "the asking proxy's region".
"""

from __future__ import annotations

from collections.abc import Iterable

# Istio's labels, newest first; Kubernetes label values cannot hold "/", so "." stands
# for it there ("us-east.zone-a").
LOCALITY_LABELS = ("topology.istio.io/locality", "istio-locality")


def from_label(value: str) -> str:
    """A label's locality in "/" form, as Istio reads it."""
    return value if "/" in value else value.replace(".", "/")


def locality_of_labels(labels: Iterable[tuple[str, str]]) -> str:
    # One pass, no dict: every pod's labels go through here on each Mesh build.
    found = ""
    for name, value in labels:
        if value and name == LOCALITY_LABELS[0]:
            return from_label(value)
        if value and name == LOCALITY_LABELS[1]:
            found = value
    return from_label(found) if found else ""


def join(region: str, zone: str = "", subzone: str = "") -> str:
    """"region/zone/subzone" without trailing empty parts ("" when all are empty)."""
    parts = [region, zone, subzone]
    while parts and not parts[-1]:
        parts.pop()
    return "/".join(parts)


def split(locality: str) -> tuple[str, str, str]:
    parts = [*locality.split("/", 2), "", ""][:3]
    return parts[0], parts[1], parts[2]
