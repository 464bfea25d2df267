"""State-of-the-world requests, read without paying for names that did not change.

Envoy repeats every subscribed name in each SotW request: 3,000 EDS names, ~140 kB, in
every ACK of every proxy. Parsed into Python strings, that was about a millisecond per
request, most of the server's CPU for a push to a thousand proxies. So a request arrives
as bytes and is read in two parts: its head (version, node, type, nonce, error) by a
message type that has no names field and skips them in C, and its names only when its
bytes are not exactly head + the names of the stream's current subscription.

The comparison is exact: the bytes match only if the request *is* those head fields
and those names, canonically encoded. A request encoded any other way (fields out of
order, unknown fields, a repeated field) does not match and is parsed in full.
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.rpc import status_pb2

from controlplane.xds.subscriptions import Subscription


def _head_class() -> Any:
    """DiscoveryRequest without its names (field 3) and locators (7); node and
    error_detail as bytes (the same wire type), parsed only when needed. proto2, for
    presence: an empty error_detail is still a NACK."""
    f = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(name="controlplane/xds/request_head.proto",
                                            package="controlplane.xds", syntax="proto2")
    head = fd.message_type.add(name="RequestHead")
    for number, name, kind in ((1, "version_info", f.TYPE_STRING), (2, "node", f.TYPE_BYTES),
                               (4, "type_url", f.TYPE_STRING),
                               (5, "response_nonce", f.TYPE_STRING),
                               (6, "error_detail", f.TYPE_BYTES)):
        head.field.add(name=name, number=number, type=kind, label=f.LABEL_OPTIONAL)
    return message_factory.GetMessages([fd], pool=descriptor_pool.DescriptorPool())[
        "controlplane.xds.RequestHead"]


_Head = _head_class()


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + _varint(len(value)) + value


# (tag, SotwRequest attribute): the head's fields before the names and after them, in
# field order.
_BEFORE_NAMES = ((0x0A, "version_info"), (0x12, "_node"))
_AFTER_NAMES = ((0x22, "type_url"), (0x2A, "response_nonce"), (0x32, "_error"))


def names_wire(names: tuple[str, ...]) -> bytes:
    """The names as a request encodes them (field 3, in order)."""
    return discovery_pb2.DiscoveryRequest(resource_names=names).SerializeToString()


class SotwRequest:
    """One DiscoveryRequest, as received: the head's fields, and the bytes for the names.

    The head is copied out of the parsed message and the message dropped at once: upb
    keeps the fields it does not know — the 140 kB of names — in the message, a second
    copy of every ACK for as long as the request lives."""

    __slots__ = ("_error", "_full", "_node", "data", "response_nonce", "type_url",
                 "version_info")

    def __init__(self, data: bytes) -> None:
        self.data = data
        head = _Head.FromString(data)
        self.version_info: str = head.version_info
        self.type_url: str = head.type_url
        self.response_nonce: str = head.response_nonce
        self._node: bytes | None = head.node if head.HasField("node") else None
        self._error: bytes | None = (head.error_detail if head.HasField("error_detail")
                                     else None)
        self._full: discovery_pb2.DiscoveryRequest | None = None

    def node_size(self) -> int:
        """Bytes of the node as sent (0: none), known without parsing it."""
        return len(self._node) if self._node is not None else 0

    def node(self) -> base_pb2.Node | None:
        return base_pb2.Node.FromString(self._node) if self._node is not None else None

    def error_message(self) -> str | None:
        """Envoy's reason when this is a NACK, else None."""
        if self._error is None:
            return None
        return status_pb2.Status.FromString(self._error).message

    def _head_fields(self, fields: tuple[tuple[int, str], ...]) -> bytes:
        """The head's fields among `fields`, encoded as in the request (field order)."""
        out = b""
        for tag, name in fields:
            value = getattr(self, name)
            if value is None or (isinstance(value, str) and not value):
                continue
            out += _field(tag, value.encode() if isinstance(value, str) else value)
        return out

    def names_are(self, sub: Subscription | None) -> bool:
        """The request names exactly `sub`'s names, in its order."""
        if sub is None:
            return False
        data = self.data
        prefix = self._head_fields(_BEFORE_NAMES)
        suffix = self._head_fields(_AFTER_NAMES)
        wire = sub.wire
        if wire is None:
            wire = sub.wire = names_wire(sub.raw)
        return (len(data) == len(prefix) + len(wire) + len(suffix)
                and data.startswith(prefix) and data.endswith(suffix)
                and data.startswith(wire, len(prefix)))

    def names(self) -> tuple[str, ...]:
        """The requested names, parsed in full."""
        if self._full is None:
            self._full = discovery_pb2.DiscoveryRequest.FromString(self.data)
        return tuple(self._full.resource_names)
