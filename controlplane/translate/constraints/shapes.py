"""Known-valid wire shapes.

The hand-written fast path, for what a mesh has most of: endpoints. An LbEndpoint that
is exactly endpoint.address.socket_address {address: <IPv4>, port_value: <below 16384>}
and maybe a health_status is recognised on its serialized bytes by one regex and its
four lengths (the lengths make the regex's reading of the bytes protobuf's). Every such
LbEndpoint passes every check (protocol TCP, address non-empty and an IP literal,
port_specifier set and <= 65535, nothing else set), so it is not walked. A whole
ClusterLoadAssignment that is a cluster_name and localities holding only such
endpoints (what the translator makes) is taken the same way, serialized once (one C
call) instead of walked through 4 messages per endpoint. Where the shape does not
hold, the walk runs as everywhere else. That the shape implies every check holds for
the rules and checks these types have today: `_SHAPE_FINGERPRINTS` pins them, and a
change (new protos, an edited envoy_check) turns the fast path off until it is looked
at again. tests/test_constraints.py compares it with the walk over random and mutated
endpoints and assignments, and over bytes built to fool a regex that ignored lengths.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
from collections.abc import Callable

from google.protobuf.descriptor import Descriptor
from validate import validate_pb2

from controlplane.translate import envoy_checks
from controlplane.translate.constraints.rules import _field_rules
from controlplane.translate.constraints.wellknown import _POOL

_OCTET = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_LB_ENDPOINT_BODY = (
    rb"\x0a[\x00-\x7f]\x0a[\x00-\x7f]\x0a[\x00-\x7f]\x12[\x00-\x7f]"  # endpoint.address...
    rb"(" + _OCTET + rb"(?:\." + _OCTET + rb"){3})"  # socket_address.address (2)
    rb"\x18([\x00-\x7f]|[\x80-\xff][\x00-\x7f])"  # port_value (3): 1 or 2 varint bytes
    rb"(?:\x10[\x80-\xff]{0,9}[\x00-\x7f])?")  # health_status (2), any value
_LB_ENDPOINT_SHAPE = re.compile(_LB_ENDPOINT_BODY)
# One lb_endpoints entry (field 2) of a LocalityLbEndpoints: tag, length, an LbEndpoint.
_LB_ENDPOINT_ITEM = re.compile(rb"\x12[\x00-\x7f]" + _LB_ENDPOINT_BODY)


def _lb_endpoint_valid(b: bytes) -> bool:
    """True if `b` (a serialized LbEndpoint) has the shape above, lengths included (so
    the regex's reading of the bytes is protobuf's)."""
    m = _LB_ENDPOINT_SHAPE.fullmatch(b)
    if m is None:
        return False
    # socket_address: tag, length, the address, tag, the port
    sa = 3 + (m.end(1) - m.start(1)) + (m.end(2) - m.start(2))
    return (b[7] == m.end(1) - m.start(1) and b[5] == sa and b[3] == sa + 2
            and b[1] == sa + 4)


def _varint(b: bytes, i: int) -> tuple[int, int]:
    """The varint at b[i:] and where it ends; -1 when cut short or too long."""
    value = shift = 0
    while i < len(b) and shift < 64:
        byte = b[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
    return -1, i


def _assignment_valid(b: bytes) -> bool:
    """True if `b` (a serialized ClusterLoadAssignment) is a cluster_name (not empty)
    and localities holding nothing but LbEndpoints of the shape above: what the
    translator makes. Then every check passes (cluster_name min_len, priority 0)."""
    n = len(b)
    if n < 2 or b[0] != 0x0A:
        return False
    size, i = _varint(b, 1)
    if size <= 0:  # min_len 1: a rune is at least a byte
        return False
    i += size
    item = _LB_ENDPOINT_ITEM.match
    while i < n:
        if b[i] != 0x12:  # endpoints (2); policy, named_endpoints...: walk
            return False
        size, j = _varint(b, i + 1)
        end = j + size
        if size < 0 or end > n:
            return False
        while j < end:
            m = item(b, j, end)
            if m is None:
                return False
            ip = m.end(1) - m.start(1)
            sa = 3 + ip + (m.end(2) - m.start(2))
            if not (b[j + 9] == ip and b[j + 7] == sa and b[j + 5] == sa + 2
                    and b[j + 3] == sa + 4 and b[j + 1] == m.end() - j - 2):
                return False
            j = m.end()
        i = end
    return i == n


_LB_ENDPOINT_TYPES = ("envoy.config.endpoint.v3.LbEndpoint", "envoy.config.endpoint.v3.Endpoint",
                      "envoy.config.core.v3.Address", "envoy.config.core.v3.SocketAddress")
_SHAPES: dict[str, tuple[Callable[[bytes], bool], tuple[str, ...]]] = {
    "envoy.config.endpoint.v3.LbEndpoint": (_lb_endpoint_valid, _LB_ENDPOINT_TYPES),
    "envoy.config.endpoint.v3.ClusterLoadAssignment": (_assignment_valid, (
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        "envoy.config.endpoint.v3.LocalityLbEndpoints", *_LB_ENDPOINT_TYPES)),
}
# sha256 of what the shape's verdict rests on (see _shape_fingerprint).
_SHAPE_FINGERPRINTS = {
    "envoy.config.endpoint.v3.ClusterLoadAssignment":
        "8f71638b98a2a31705064c22b17c6958ef389994254e040701f6c705970ca92d",
    "envoy.config.endpoint.v3.LbEndpoint":
        "d4989888ba93664eee03d95410bd6a15475f416ba48ffe1b581567feb5a79e41",
}


def _shape_fingerprint(types: tuple[str, ...]) -> str:
    """Every field's rules, the required oneofs and the source of every envoy_check of
    the types a shape's verdict covers."""
    h = hashlib.sha256()
    for full in types:
        desc = _POOL.FindMessageTypeByName(full)
        h.update(full.encode())
        for fd in desc.fields:
            rules = _field_rules(fd)
            h.update(f"{fd.number}:{fd.name}:".encode())
            h.update(b"-" if rules is None else rules.SerializeToString(deterministic=True))
        for o in desc.oneofs:
            opts = o.GetOptions()
            required = (opts.HasExtension(validate_pb2.required)
                        and opts.Extensions[validate_pb2.required])
            h.update(f"{o.name}:{required}".encode())
        fns = [envoy_checks.CHECKS.get(full),
               *(fn for _, fn in envoy_checks.CHECKS_AT.get(full, ()))]
        for fn in fns:
            if fn is not None:
                h.update(inspect.getsource(fn).encode())
    h.update(inspect.getsource(envoy_checks._is_ip).encode())  # what the address check asks
    return h.hexdigest()


@functools.cache
def _fast_shape(desc: Descriptor) -> Callable[[bytes], bool] | None:
    """The known-valid shape of `desc`, if it has one and it still holds."""
    entry = _SHAPES.get(desc.full_name)
    if entry is None:
        return None
    valid, types = entry
    return valid if _shape_fingerprint(types) == _SHAPE_FINGERPRINTS[desc.full_name] else None
