"""What several checks share: making a finding, and reading the objects by kind."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from controlplane.analysis.findings import CODES, Finding
from controlplane.analysis.inputs import Inputs
from controlplane.model.destination_rule import DestinationRule
from controlplane.model.meta import Key
from controlplane.model.parse import Object, key_of

T = TypeVar("T")


def finding(code: str, obj: Object | Key, path: str, message: str, fix: str) -> Finding:
    return Finding(CODES[code], obj if isinstance(obj, Key) else key_of(obj), path, message,
                   fix)


def of_kind(inputs: Inputs, kind: type[T]) -> Iterator[T]:
    """The objects of one kind (in no particular order: `analyze` sorts the findings)."""
    for obj in inputs.by_kind.get(kind.__name__, ()):
        assert isinstance(obj, kind)
        yield obj


def destination_rules(inputs: Inputs) -> Iterator[tuple[DestinationRule, str]]:
    """Each DestinationRule with the FQDN its host means (Mesh.resolve_host)."""
    for dr in of_kind(inputs, DestinationRule):
        yield dr, inputs.mesh.resolve_host(dr.host, dr.meta.namespace)


def ref(obj: Object) -> str:
    """`ns/name`, as findings name another object."""
    return f"{obj.meta.namespace}/{obj.meta.name}"
