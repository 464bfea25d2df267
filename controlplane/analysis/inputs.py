"""What every check reads: one consistent set of objects and the Mesh built from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controlplane.model.errors import FieldError
from controlplane.model.mesh import Mesh, build_mesh
from controlplane.model.meta import Key
from controlplane.model.parse import Object


@dataclass(frozen=True)
class Invalid:
    """An object its source refused (validation, or the push loop's checks): not in
    `objects`, so no other check sees it."""

    key: Key
    errors: tuple[FieldError, ...]


@dataclass(frozen=True)
class Inputs:
    mesh: Mesh  # built from `objects` (model.mesh.build_mesh)
    objects: Mapping[Key, Object]  # every object as parsed (valid ones only)
    invalid: tuple[Invalid, ...] = ()

    @classmethod
    def of(cls, objects: Mapping[Key, Object], invalid: tuple[Invalid, ...] = ()) -> Inputs:
        return cls(build_mesh(objects), objects, invalid)


def field_error(text: str) -> FieldError:
    """A FieldError back from its "path: message" form (the loader keeps strings)."""
    path, sep, message = text.partition(": ")
    return FieldError(path, message) if sep else FieldError("", text)
