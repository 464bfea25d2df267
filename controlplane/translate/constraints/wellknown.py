"""The well-known types the checker knows itself: the range protobuf allows a Duration and
a Timestamp (checked on the whole message, as PGV's C++ validators do), the wrapper types
(whose rules apply to the wrapped value) and what an Any packs (looked up in the
descriptor pool and decoded here; each walker walks it its own way: `plans._walk_any`,
`entries._walk_any_compiled`).
"""

from __future__ import annotations

from typing import Any

from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from controlplane.translate.violations import Out, Violation, short

# google.protobuf.Duration / Timestamp range (duration.proto, timestamp.proto).
DURATION_MAX_SECONDS = 315_576_000_000
TIMESTAMP_MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
TIMESTAMP_MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
_NANOS_MAX = 999_999_999

_WRAPPERS = frozenset({
    "google.protobuf.DoubleValue", "google.protobuf.FloatValue", "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value", "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue",
})
_DURATION = "google.protobuf.Duration"
_TIMESTAMP = "google.protobuf.Timestamp"
_ANY = "google.protobuf.Any"

_POOL = descriptor_pool.Default()


def _duration_range(d: Any, path: str, out: Out) -> None:
    s, n = d.seconds, d.nanos
    if not -DURATION_MAX_SECONDS <= s <= DURATION_MAX_SECONDS:
        out.append(Violation(path, f"duration seconds {s} outside protobuf's range "
                             f"±{DURATION_MAX_SECONDS}"))
    if not -_NANOS_MAX <= n <= _NANOS_MAX or (s > 0 > n) or (s < 0 < n):
        out.append(Violation(path, f"duration nanos {n} invalid (±{_NANOS_MAX}, same sign "
                             f"as seconds {s})"))


# Non-negative and within range: nothing to report (the common case, tested inline).
_duration_range.fast = (  # type: ignore[attr-defined]
    "0 <= {v}.seconds <= {s} and 0 <= {v}.nanos <= {n}",
    {"s": DURATION_MAX_SECONDS, "n": _NANOS_MAX})


def _timestamp_range(t: Any, path: str, out: Out) -> None:
    if not TIMESTAMP_MIN_SECONDS <= t.seconds <= TIMESTAMP_MAX_SECONDS:
        out.append(Violation(path, f"timestamp seconds {t.seconds} outside protobuf's range"))
    if not 0 <= t.nanos <= _NANOS_MAX:
        out.append(Violation(path, f"timestamp nanos {t.nanos} outside 0..{_NANOS_MAX}"))


def _packed_class(url: str) -> type[Message] | None:
    """The class of what an Any of `url` packs, when the descriptor pool knows it."""
    try:
        desc = _POOL.FindMessageTypeByName(url.rpartition("/")[2])
    except KeyError:
        return None
    return message_factory.GetMessageClass(desc)


def _unpack(a: any_pb2.Any, cls: type[Message], path: str, out: Out) -> Message | None:
    inner = cls()
    try:
        inner.ParseFromString(a.value)
    except Exception as exc:  # a DecodeError: Envoy cannot unpack it either
        out.append(Violation(path, f"cannot decode packed {short(a.type_url)}: {exc}"))
        return None
    return inner
