"""Resources memoised apart from their names.

Each cluster has its own name (and EDS service name), and is otherwise often the same
as many others (one traffic policy for a whole namespace). A Cluster is checked in two
parts: its name and eds_cluster_config, walked every time, and the rest, memoised by
its bytes without those two fields (cut from the leading fields of the serialization,
which protobuf writes in field-number order). Sound while no check of the rest reads
the fields set apart: they are in no required oneof and no at-check path starts in
them (tested when the parts are built), and the message-wide envoy_check does not read
them, which `_APART_FINGERPRINTS` pins to the check's source (a change turns this off).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor

from controlplane.translate import envoy_checks
from controlplane.translate.constraints.codegen import _NAMES, _NS, _compile
from controlplane.translate.constraints.memos import _MEMOS, _Memo, _memo_put
from controlplane.translate.constraints.plans import _Plan, _plan
from controlplane.translate.constraints.shapes import _varint
from controlplane.translate.violations import Out

_APART: dict[str, frozenset[str]] = {
    "envoy.config.cluster.v3.Cluster": frozenset({"name", "eds_cluster_config"}),
}
_APART_FINGERPRINTS = {
    "envoy.config.cluster.v3.Cluster":
        "dd23758f836483fb7332cb498fe7cafe51f9d6ec12b19777f6d2786fdd493ee4",
}


def _apart_fingerprint(full: str) -> str:
    h = hashlib.sha256()
    for fn in (envoy_checks.CHECKS.get(full),
               *(fn for _, fn in envoy_checks.CHECKS_AT.get(full, ()))):
        if fn is not None:
            h.update(inspect.getsource(fn).encode())
    return h.hexdigest()


def _split_plan(plan: _Plan, numbers: frozenset[int]) -> tuple[_Plan, _Plan]:
    """The plan of the fields `numbers` alone (no message-wide checks), and of the rest."""
    def part(keep: Callable[[int], bool], whole: bool) -> _Plan:
        return _Plan({n: f for n, f in plan.fields.items() if keep(n)},
                     tuple(f for f in plan.always if keep(f.number)),
                     plan.required_oneofs if whole else (), plan.extra if whole else None,
                     plan.own if whole else (), plan.at if whole else ())
    return part(lambda n: n in numbers, False), part(lambda n: n not in numbers, True)


def _masked(b: bytes, numbers: frozenset[int], last: int) -> bytes | None:
    """`b` (a serialized message) without its leading length-delimited fields `numbers`
    (up to field `last`), or None when the bytes do not read that simply."""
    kept: list[bytes] = []
    i, n = 0, len(b)
    while i < n:
        start = i
        tag = b[i]  # one byte for fields 1-15, the common case; else the general way
        if tag < 0x80:
            i += 1
        else:
            tag, i = _varint(b, i)
            if tag < 0:
                return None
        if tag >> 3 > last:
            kept.append(b[start:])
            break
        wire = tag & 7
        if wire == 2:
            size = b[i] if i < n else -1
            if 0 <= size < 0x80:
                i += 1
            else:
                size, i = _varint(b, i)
                if size < 0:
                    return None
            i += size
        elif wire == 0:
            value, i = _varint(b, i)
            if value < 0:
                return None
        elif wire == 5:
            i += 4
        elif wire == 1:
            i += 8
        else:
            return None
        if i > n:
            return None
        if not (wire == 2 and tag >> 3 in numbers):
            kept.append(b[start:i])
    return b"".join(kept)


def _apart(desc: Descriptor, walk: Callable[[Any, Out], None]) -> Callable[[Any, Out], None]:
    """The check of a `desc` in two parts (see above), or `walk` when that is unsound."""
    full = desc.full_name
    plan = _plan(desc)
    assert plan is not None
    fds = [desc.fields_by_name[name] for name in _APART[full]]
    numbers = frozenset(fd.number for fd in fds)
    if (_apart_fingerprint(full) != _APART_FINGERPRINTS[full]
            or any(fd.containing_oneof is not None or fd.is_repeated for fd in fds)
            or any(hops[0] in _APART[full] for hops, _ in plan.at)):
        return walk
    alone, rest = _split_plan(plan, numbers)
    alone_name = f"_w{next(_NAMES)}_{desc.name}_apart"
    rest_name = f"_w{next(_NAMES)}_{desc.name}_rest"
    _compile(desc, alone_name, alone)
    _compile(desc, rest_name, rest)
    check_alone, check_rest = _NS[alone_name], _NS[rest_name]
    memo = _MEMOS.setdefault(f"{full} (apart)", _Memo())
    table = memo.table
    last = max(numbers)

    def run(msg: Any, out: Out) -> None:
        key = _masked(msg.SerializePartialToString(), numbers, last) if memo.on else None
        if key is None:
            walk(msg, out)
            return
        found = table.get(key)
        if found is None:
            start = len(out)
            check_rest(msg, out)
            _memo_put(memo, key, out, start)
        else:
            memo.hits += 1
            out.extend(found)
        check_alone(msg, out)
    return run
