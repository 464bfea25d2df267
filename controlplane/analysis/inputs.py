"""What every check reads: one consistent set of objects and the Mesh built from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controlplane.model.mesh import Mesh
from controlplane.model.meta import Key
from controlplane.model.parse import Object


@dataclass(frozen=True)
class Inputs:
    mesh: Mesh  # built from `objects` (model.mesh.build_mesh)
    objects: Mapping[Key, Object]  # every object as parsed (valid ones only)
