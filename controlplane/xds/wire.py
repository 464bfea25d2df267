"""Hand-assembled protobuf wire format for discovery responses.

Each resource is serialized once per version into the exact bytes of a repeated
`resources` entry; a response for one stream is then a join of shared bytes plus its
own nonce, with no per-stream protobuf work. Field numbers are from
envoy/service/discovery/v3/discovery.proto and pinned by tests that parse the output
with the generated classes.
"""

from __future__ import annotations

import functools


def varint(n: int) -> bytes:
    if n < 0x80:  # the common cases first: names, versions and most resources are short
        return bytes((n,))
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# Tags of the length-delimited fields used here (all below 16: one byte each).
_TAG = {field: bytes(((field << 3) | 2,)) for field in range(1, 16)}


def length_delimited(field: int, payload: bytes) -> bytes:
    return _TAG[field] + varint(len(payload)) + payload


@functools.cache
def _any_type(type_url: str) -> bytes:
    return length_delimited(1, type_url.encode())


def any_bytes(type_url: str, value: bytes) -> bytes:
    """google.protobuf.Any: type_url = 1, value = 2."""
    return b"".join((_any_type(type_url), _TAG[2], varint(len(value)), value))


def resource_entry(type_url: str, value: bytes) -> bytes:
    """One `resources` (field 2) entry of a DiscoveryResponse."""
    return length_delimited(2, any_bytes(type_url, value))


def delta_entry_of(name: str, version: str, entry: bytes) -> bytes:
    """`delta_resource_entry` from a `resource_entry` (its Any, unwrapped)."""
    start = 1  # after the tag; then the length's varint
    while entry[start] & 0x80:
        start += 1
    return _delta_entry(name, version, entry[start + 1:])


def _delta_entry(name: str, version: str, packed: bytes) -> bytes:
    return length_delimited(2, b"".join((
        length_delimited(1, version.encode()),
        length_delimited(2, packed),
        length_delimited(3, name.encode()),
    )))


def discovery_response(version: str, entries: list[bytes] | bytes, type_url: str,
                       nonce: str) -> bytes:
    """DiscoveryResponse: version_info = 1, resources = 2, type_url = 4, nonce = 5.
    `entries`: resource entries, or several already joined."""
    return b"".join((
        length_delimited(1, version.encode()),
        entries if isinstance(entries, bytes) else b"".join(entries),
        length_delimited(4, type_url.encode()),
        length_delimited(5, nonce.encode()),
    ))


def delta_resource_entry(type_url: str, name: str, version: str, value: bytes) -> bytes:
    """One `resources` (field 2) entry of a DeltaDiscoveryResponse: a discovery Resource
    with version = 1, resource = 2 (Any), name = 3."""
    return _delta_entry(name, version, any_bytes(type_url, value))


def delta_discovery_response(version: str, entries: list[bytes] | bytes, type_url: str,
                             removed: list[str], nonce: str) -> bytes:
    """DeltaDiscoveryResponse: system_version_info = 1, resources = 2, type_url = 4,
    nonce = 5, removed_resources = 6. `entries`: resource entries, or several joined."""
    return b"".join((
        length_delimited(1, version.encode()),
        entries if isinstance(entries, bytes) else b"".join(entries),
        length_delimited(4, type_url.encode()),
        length_delimited(5, nonce.encode()),
        *(length_delimited(6, name.encode()) for name in removed),
    ))
