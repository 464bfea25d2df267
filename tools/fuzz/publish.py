"""Translate and publish a set of objects, as the push loop does, for one probe proxy.

This is the one place the fuzzer touches the pipeline: point `publish` at whatever the
push loop does (per-object isolation included) and every check downstream stays as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane.model.mesh import build_mesh
from controlplane.model.parse import Object, key_of
from controlplane.model.proxy import ProxyView
from controlplane.translation import PROBE, MeshTranslation
from controlplane.xds import types
from controlplane.xds.cache import SnapshotCache

# The seeds live in this namespace: the probe sees their short names, as their own
# sidecars would.
NAMESPACE = "fuzz"


@dataclass
class Withheld:
    """Something the pipeline refused to publish rather than crash or make Envoy NACK."""

    what: str  # the unit, e.g. "virtual host shop.fuzz.svc.cluster.local:8000"
    reason: str  # should name the resource and field
    by: str  # "translation" (the translator raised) or "constraints" (Envoy would reject)


@dataclass
class Published:
    resources: dict[str, list[Any]]  # type URL -> decoded messages the probe is sent
    withheld: list[Withheld] = field(default_factory=list)


def publish(objects: list[Object], namespace: str = NAMESPACE) -> Published:
    """Build the Mesh, translate, publish into a fresh SnapshotCache and read back what a
    proxy in `namespace` would be sent. An exception here is a finding."""
    mesh = build_mesh({key_of(o): o for o in objects})
    translation = MeshTranslation(mesh)
    probe = ProxyView(node_id="fuzz-probe", namespace=namespace)
    prepare = getattr(translation, "prepare", None)
    if prepare is not None:  # the isolating pipeline: collect failures before publishing
        prepare(probe)
    snap = SnapshotCache().publish(translation, PROBE)
    resources = {t: [types.decode(t, r.body) for r in snap.resources(t, probe).items.values()]
                 for t in types.PUSH_ORDER}
    withheld = [Withheld(f.what, f.reason, f.by)
                for f in getattr(translation, "failures", ())]
    return Published(resources, withheld)
