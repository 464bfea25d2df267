"""What every check reads: one consistent set of objects and the Mesh built from them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from controlplane.model.errors import FieldError
from controlplane.model.mesh import LabelIndex, Mesh, build_mesh
from controlplane.model.meta import Key
from controlplane.model.parse import Object
from controlplane.model.workload import Pod


@dataclass(frozen=True)
class Invalid:
    """An object its source refused (validation, or the push loop's checks): not in
    `objects`, so no other check sees it."""

    key: Key
    errors: tuple[FieldError, ...]


@dataclass(frozen=True)
class Duplicate:
    """An object several files define differently: which one is served, and the others
    (each (file, 1-based line of its document))."""

    key: Key
    used: tuple[str, int]
    others: tuple[tuple[str, int], ...]
    why: str = "the file whose path sorts last"  # the rule that chose `used`


@dataclass(frozen=True)
class Inputs:
    mesh: Mesh  # built from `objects` (model.mesh.build_mesh)
    objects: Mapping[Key, Object]  # every object as parsed (valid ones only)
    invalid: tuple[Invalid, ...] = ()
    # Documents of kinds not served (their keys), and whether the kind is a real
    # Kubernetes/Istio one (else most likely a typo).
    unserved: tuple[tuple[Key, bool], ...] = ()
    duplicates: tuple[Duplicate, ...] = ()  # objects defined differently by several files

    @cached_property
    def by_kind(self) -> dict[str, list[Object]]:
        """The objects grouped by kind, once for every check."""
        out: dict[str, list[Object]] = defaultdict(list)
        for key, obj in self.objects.items():
            out[key.kind].append(obj)
        return out

    @cached_property
    def pods(self) -> dict[str, LabelIndex]:
        """Each namespace's Pods, indexed by label as the Mesh build indexes them (only
        namespaces holding Pods)."""
        by_ns: dict[str, dict[str, Pod]] = defaultdict(dict)
        for pod in self.by_kind.get("Pod", ()):
            assert isinstance(pod, Pod)
            by_ns[pod.meta.namespace][pod.meta.name] = pod
        return {ns: LabelIndex(pods) for ns, pods in by_ns.items()}

    @classmethod
    def of(cls, objects: Mapping[Key, Object], invalid: tuple[Invalid, ...] = (),
           unserved: tuple[tuple[Key, bool], ...] = (),
           duplicates: tuple[Duplicate, ...] = ()) -> Inputs:
        return cls(build_mesh(objects), objects, invalid, unserved, duplicates)


def field_error(text: str) -> FieldError:
    """A FieldError back from its "path: message" form (the loader keeps strings)."""
    path, sep, message = text.partition(": ")
    return FieldError(path, message) if sep else FieldError("", text)
