"""Envoy's own constraints, checked on a resource before it is published: the
protoc-gen-validate (PGV) rules Envoy's protos carry as field options, read from the
descriptors xds-protos ships, plus the checks Envoy makes in code (`envoy_checks`), so a
proxy is never sent a resource it would NACK.

    check(message) -> list[Violation]

A per-descriptor plan (the fields that have rules or may lead to some, with their rules
compiled to small closures) is built once per message type and cached. Two walkers use
the plans: `check` runs Python generated from them (a function per message type, compiled
on first use: the fields with checks read directly, simple rules inlined as expressions,
small sub-messages inlined, violation paths built only when one is found), and
`check_reference` interprets them (ListFields() per message, a closure per field): it is
what `check` was before it was compiled, kept as the oracle the tests hold `check` to.
Both recurse into sub-messages, including what an `Any` packs when the descriptor pool
knows the type. `check` also remembers the violations of sub-messages by their serialized
bytes (a mesh repeats itself: the same endpoint in a service's cluster and its subsets',
the same retry policy on every route; a Cluster but for its names, see apart.py) and
knows one wire shape as valid without walking it: the ClusterLoadAssignment the
translator makes (see shapes.py).

Semantics follow PGV's C++ validators (what Envoy runs): proto3 scalars without presence
are checked even at their default value, oneof members only when set, wrapper rules apply
to the wrapped value when the wrapper is set, `ignore_empty` skips a zero value.
`check` reports a message's violations in field-number order, the reference in its own.

Measured with `python -m benchmarks.constraints` (the benchmarks' 1,000-service mesh, 10
endpoints each: what the push loop checks, 3,000 clusters, 3,000 load assignments with
20,000 endpoints, 1,100 routes, 5 listeners), CPU time on the shared 2-core dev machine,
each check as the first after a restart (memos empty): `check` about 55 ms (clusters ~17,
assignments ~25, routes ~12); the interpreted walk it replaced about 210 ms (~49, ~135,
~26). The first check of each type adds ~60 ms of plan building and compiling, once per
process. With the memos warm (the same mesh checked again) `check` takes ~45-50 ms.

The entry points are here; the parts, each with its own account, by job:

    rules.py      PGV rules (a field's FieldRules) compiled to closures
    wellknown.py  Duration, Timestamp, wrapper and Any handling of protobuf's own types
    plans.py      the plan per message type, and the reference walker over it
    codegen.py    the compiled walker: plans turned into Python source, exec'd
    entries.py    the compiled walker's entry per message class (and its Any walk)
    memos.py      a sub-message's violations remembered by its serialized bytes
    shapes.py     known-valid wire shapes (the translator's endpoints and assignments)
    apart.py      Clusters memoised apart from their names

What they report (`Violation`) and the helpers Envoy's checks in code share with them
are in translate/violations.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from controlplane.translate.constraints.codegen import _rebase
from controlplane.translate.constraints.entries import _ENTRIES, _entry
from controlplane.translate.constraints.memos import _MEMO_RETRY, _retry_memos, reset_memos
from controlplane.translate.constraints.plans import _walker
from controlplane.translate.constraints.wellknown import (
    DURATION_MAX_SECONDS,
    TIMESTAMP_MAX_SECONDS,
    TIMESTAMP_MIN_SECONDS,
)
from controlplane.translate.violations import Out, Violation

__all__ = [
    "DURATION_MAX_SECONDS",
    "TIMESTAMP_MAX_SECONDS",
    "TIMESTAMP_MIN_SECONDS",
    "Violation",
    "check",
    "check_all",
    "check_reference",
    "reset_memos",
]

_checks = 0  # calls of `check`, to try memos that are off again now and then


def check(message: Any, path: str = "") -> list[Violation]:
    """Every PGV rule and Envoy code check `message` (any Envoy resource) breaks."""
    global _checks
    _checks += 1
    if _checks >= _MEMO_RETRY:
        _checks = 0
        _retry_memos()
    out: Out = []
    cls = type(message)
    fn = _ENTRIES[cls] if cls in _ENTRIES else _entry(cls)
    if fn is not None:
        fn(message, out)
        if path and out:
            _rebase(out, 0, path)
    return out


def check_reference(message: Any, path: str = "") -> list[Violation]:
    """`check` by the reference walker: the same plans, interpreted. Slower; the oracle
    the tests hold the compiled walker to."""
    out: Out = []
    walk = _walker(message.DESCRIPTOR)
    if walk is not None:
        walk(message, path, out)
    return out


def check_all(messages: Iterable[Any]) -> dict[str, list[Violation]]:
    """Violations per resource name (resources without any are left out)."""
    found = {}
    for m in messages:
        v = check(m)
        if v:
            found[getattr(m, "name", "") or getattr(m, "cluster_name", "")] = v
    return found
