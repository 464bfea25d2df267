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
the same retry policy on every route; a Cluster but for its names, see "resources
memoised apart from their names") and knows one wire shape as valid without walking it:
the ClusterLoadAssignment the translator makes (see "known-valid wire shapes").

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
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import ipaddress
import itertools
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import re2
from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from validate import validate_pb2

from controlplane.translate import envoy_checks
from controlplane.translate.violations import (
    IPV4,
    MessageCheck,
    Out,
    Rule,
    Violation,
    join,
    short,
)

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

# PGV's well-known header patterns (validate.proto, KnownRegex): strict is the default;
# strict=false (what Envoy's HeaderValue uses) only forbids NUL, CR and LF. The `+-.`
# range of the name class is PGV's own (it admits ','), kept so we agree with Envoy.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_HEADER_NAME_STRICT = re2.compile(r"^:?[0-9a-zA-Z!#$%&'*+-.^_|~\x60]+$", _RE2_OPTIONS)
_HEADER_VALUE_STRICT = re2.compile(r"^[^\x00-\x08\x0A-\x1F\x7F]*$", _RE2_OPTIONS)
_HEADER_LOOSE = re2.compile(r"^[^\x00\x0A\x0D]*$", _RE2_OPTIONS)
# What the compiled walker tries first (see `_fast`): the same name class in Python's re;
# a printable string has none of the control characters a strict value refuses; the
# loose pattern is exactly "no NUL, LF or CR".
_HEADER_NAME_FAST = re.compile(r":?[0-9a-zA-Z!#$%&'*+-.^_|~\x60]+")
_HEADER_FAST = {
    _HEADER_NAME_STRICT: ("{p}.fullmatch({v}) is not None", {"p": _HEADER_NAME_FAST}),
    _HEADER_VALUE_STRICT: ("{v}.isprintable()", {}),
    _HEADER_LOOSE: ("'\\x00' not in {v} and '\\n' not in {v} and '\\r' not in {v}", {}),
}


def _fast(rule: Rule, expr: str, **consts: Any) -> Rule:
    """Attach to `rule` a Python expression (over `{v}` and the named constants) that is
    true only when the rule holds: the compiled walker inlines it and calls `rule` (for
    its message) only when the expression is false. Never the other way round: a false
    expression proves nothing, the rule decides."""
    rule.fast = (expr, consts)  # type: ignore[attr-defined]
    return rule


# -- rule compilation ------------------------------------------------------------------------

def _ordered_range(r: Any, conv: Callable[[Any], Any], show: Callable[[Any], str],
                   fast: bool = False) -> list[Rule]:
    """PGV's lt/lte/gt/gte, including its exclusive ("outside") form when the lower
    bound is above the upper one."""
    lo = hi = None
    if r.HasField("gt"):
        lo, lo_incl = conv(r.gt), False
    elif r.HasField("gte"):
        lo, lo_incl = conv(r.gte), True
    if r.HasField("lt"):
        hi, hi_incl = conv(r.lt), False
    elif r.HasField("lte"):
        hi, hi_incl = conv(r.lte), True

    def above(v: Any) -> bool:
        return v >= lo if lo_incl else v > lo

    def below(v: Any) -> bool:
        return v <= hi if hi_incl else v < hi

    lo_txt = "" if lo is None else f"{'>=' if lo_incl else '>'} {show(lo)}"
    hi_txt = "" if hi is None else f"{'<=' if hi_incl else '<'} {show(hi)}"
    lo_expr = "" if lo is None else f"{{v}} {'>=' if lo_incl else '>'} {{lo}}"
    hi_expr = "" if hi is None else f"{{v}} {'<=' if hi_incl else '<'} {{hi}}"
    pair: tuple[Rule, str]
    if lo is not None and hi is not None:
        if hi >= lo:
            pair = (lambda v: None if above(v) and below(v) else
                    f"must be {lo_txt} and {hi_txt}, got {show(v)}",
                    f"{lo_expr} and {hi_expr}")
        else:
            pair = (lambda v: None if above(v) or below(v) else
                    f"must be {lo_txt} or {hi_txt}, got {show(v)}",
                    f"({lo_expr} or {hi_expr})")
    elif lo is not None:
        pair = lambda v: None if above(v) else f"must be {lo_txt}, got {show(v)}", lo_expr
    elif hi is not None:
        pair = lambda v: None if below(v) else f"must be {hi_txt}, got {show(v)}", hi_expr
    else:
        return []
    rule, expr = pair
    return [_fast(rule, expr, lo=lo, hi=hi) if fast else rule]


def _membership(r: Any, conv: Callable[[Any], Any], show: Callable[[Any], str],
                fast: bool = False) -> list[Rule]:
    """const, in, not_in; `fast`: the values are compared as they are (no conversion),
    so the compiled walker may inline the comparison."""
    rules: list[Rule] = []
    names = r.DESCRIPTOR.fields_by_name

    def add(rule: Rule, expr: str, value: Any) -> None:
        rules.append(_fast(rule, expr, c=value) if fast else rule)
    if "const" in names and r.HasField("const"):
        const = conv(r.const)
        add(lambda v: None if v == const else
            f"must equal {show(const)} (const), got {show(v)}", "{v} == {c}", const)
    if "in" in names and len(getattr(r, "in")):
        allowed = frozenset(conv(x) for x in getattr(r, "in"))
        add(lambda v: None if v in allowed else
            f"must be one of {sorted(map(show, allowed))} (in), got {show(v)}",
            "{v} in {c}", allowed)
    if "not_in" in names and len(r.not_in):
        banned = frozenset(conv(x) for x in r.not_in)
        add(lambda v: None if v not in banned else
            f"must not be one of {sorted(map(show, banned))} (not_in), got {show(v)}",
            "{v} not in {c}", banned)
    return rules


def _numeric(r: Any) -> list[Rule]:
    show: Callable[[Any], str] = repr
    rules = _membership(r, lambda x: x, show, fast=True)
    rules += _ordered_range(r, lambda x: x, show, fast=True)
    return rules


def _float_numeric(r: Any) -> list[Rule]:
    rules = _numeric(r)
    # PGV 1.x float/double rules may carry finite=true (reject NaN and infinities).
    if "finite" in r.DESCRIPTOR.fields_by_name and r.finite:
        rules.append(lambda v: None if math.isfinite(v) else f"must be finite, got {v!r}")
    return rules


def _is_hostname(value: str) -> bool:
    # PGV's IsHostname: optional trailing dot, at most 253 characters, labels of 1-63
    # letters, digits or hyphens, not starting or ending with a hyphen.
    host = value[:-1] if value.endswith(".") else value
    if not host or len(host) > 253:
        return False
    for label in host.split("."):
        if not 0 < len(label) <= 63 or label[0] == "-" or label[-1] == "-":
            return False
        if not all(c.isascii() and (c.isalnum() or c == "-") for c in label):
            return False
    return True


def _is_ip(value: str, version: int | None = None) -> bool:
    if version != 6 and IPV4.fullmatch(value) is not None:
        return True
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        return False
    return version is None or addr.version == version


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return len(value) == 36


def _text_rules(r: Any, length: Callable[[Any], int], unit: str) -> list[Rule]:
    """The rules strings and bytes share (const, in, not_in, len, prefix...)."""
    rules = _membership(r, lambda x: x, short, fast=True)
    for name, cmp, txt, op in (("len", int.__eq__, "exactly", "=="),
                               ("min_len", int.__ge__, "at least", ">="),
                               ("max_len", int.__le__, "at most", "<=")):
        if r.HasField(name):
            bound = getattr(r, name)
            rules.append(_fast(lambda v, bound=bound, cmp=cmp, txt=txt, name=name:
                               None if cmp(length(v), bound) else
                               f"length must be {txt} {bound} {unit} ({name}), got "
                               f"{length(v)}: {short(v)}",
                               f"len({{v}}) {op} {{b}}", b=bound))
    if r.HasField("prefix"):
        p = r.prefix
        rules.append(lambda v: None if v.startswith(p) else
                     f"must start with {short(p)} (prefix), got {short(v)}")
    if r.HasField("suffix"):
        s = r.suffix
        rules.append(lambda v: None if v.endswith(s) else
                     f"must end with {short(s)} (suffix), got {short(v)}")
    if r.HasField("contains"):
        c = r.contains
        rules.append(lambda v: None if c in v else
                     f"must contain {short(c)} (contains), got {short(v)}")
    if "not_contains" in r.DESCRIPTOR.fields_by_name and r.HasField("not_contains"):
        nc = r.not_contains
        rules.append(lambda v: None if nc not in v else
                     f"must not contain {short(nc)} (not_contains), got {short(v)}")
    if r.HasField("pattern"):
        pattern = r.pattern
        compiled = re2.compile(pattern, _RE2_OPTIONS)
        rules.append(lambda v: None if compiled.search(v) is not None else
                     f"must match regex {short(pattern)} (pattern), got {short(v)}")
    return rules


def _string(r: validate_pb2.StringRules) -> list[Rule]:
    rules = _text_rules(r, len, "characters")  # PGV counts runes (code points)
    for name, cmp, txt in (("len_bytes", int.__eq__, "exactly"),
                           ("min_bytes", int.__ge__, "at least"),
                           ("max_bytes", int.__le__, "at most")):
        if r.HasField(name):
            bound = getattr(r, name)
            def rule(v: str, bound: int = bound, cmp: Callable[[int, int], bool] = cmp,
                     txt: str = txt, name: str = name) -> str | None:
                return (None if cmp(len(v.encode("utf-8")), bound) else
                        f"length must be {txt} {bound} bytes ({name}), got "
                        f"{len(v.encode('utf-8'))}: {short(v)}")
            # A code point is 1 to 4 UTF-8 bytes: enough to pass without encoding.
            fast = {"max_bytes": "len({v}) * 4 <= {b}", "min_bytes": "len({v}) >= {b}"
                    }.get(name)
            rules.append(_fast(rule, fast, b=bound) if fast else rule)
    kind = r.WhichOneof("well_known")
    if kind == "well_known_regex":
        strict = r.strict if r.HasField("strict") else True
        if r.well_known_regex == validate_pb2.HTTP_HEADER_NAME:
            pattern, what = ((_HEADER_NAME_STRICT, "an HTTP header name") if strict
                             else (_HEADER_LOOSE, "a header name without NUL, CR or LF"))
        elif r.well_known_regex == validate_pb2.HTTP_HEADER_VALUE:
            pattern, what = ((_HEADER_VALUE_STRICT, "an HTTP header value") if strict
                             else (_HEADER_LOOSE, "a header value without NUL, CR or LF"))
        else:
            pattern = None
        if pattern is not None:
            expr, consts = _HEADER_FAST[pattern]
            rules.append(_fast(lambda v, pattern=pattern, what=what:
                               None if pattern.search(v) is not None else
                               f"must be {what} (well_known_regex), got {short(v)}",
                               expr, **consts))
    elif kind in ("hostname", "ip", "ipv4", "ipv6", "address", "uuid") and getattr(r, kind):
        test: Callable[[str], bool] = {
            "hostname": _is_hostname, "ip": _is_ip,
            "ipv4": lambda v: _is_ip(v, 4), "ipv6": lambda v: _is_ip(v, 6),
            "address": lambda v: _is_hostname(v) or _is_ip(v), "uuid": _is_uuid}[kind]
        rules.append(lambda v, test=test, kind=kind:
                     None if test(v) else f"must be a valid {kind}, got {short(v)}")
    # email, uri, uri_ref: PGV's C++ code (what Envoy runs) does not implement them.
    return rules


def _bytes(r: validate_pb2.BytesRules) -> list[Rule]:
    rules = _text_rules(r, len, "bytes")
    kind = r.WhichOneof("well_known")
    if kind and getattr(r, kind):
        size = {"ip": (4, 16), "ipv4": (4,), "ipv6": (16,)}[kind]
        rules.append(lambda v: None if len(v) in size else
                     f"must be a {kind} address in bytes, got {len(v)} bytes")
    return rules


def _enum(r: validate_pb2.EnumRules, fd: FieldDescriptor) -> list[Rule]:
    rules = _membership(r, lambda x: x, repr, fast=True)
    if r.defined_only:
        defined = frozenset(v.number for v in fd.enum_type.values)
        name = fd.enum_type.full_name
        rules.append(_fast(lambda v: None if v in defined else
                           f"must be a defined {name} value (defined_only), got {v}",
                           "{v} in {d}", d=defined))
    return rules


def _nanos(d: Any) -> int:
    return d.seconds * 1_000_000_000 + d.nanos


def _show_nanos(n: int) -> str:
    return f"{n / 1e9:g}s" if n % 1_000_000 else f"{n // 1_000_000}ms"


def _duration(r: validate_pb2.DurationRules) -> list[Rule]:
    inner = (_membership(r, _nanos, _show_nanos, fast=True)
             + _ordered_range(r, _nanos, _show_nanos, fast=True))
    return [_on_nanos(inner)] if inner else []


def _on_nanos(inner: list[Rule]) -> Rule:
    def rule(d: Any) -> str | None:
        n = _nanos(d)
        for r in inner:
            if (msg := r(n)) is not None:
                return msg
        return None
    fasts = [getattr(r, "fast", None) for r in inner]
    if all(f is not None for f in fasts):
        # The compiled walker computes the nanoseconds once and tests them inline.
        rule.nanos_fast = fasts  # type: ignore[attr-defined]
    return rule


def _timestamp(r: validate_pb2.TimestampRules) -> list[Rule]:
    inner = _membership(r, _nanos, repr) + _ordered_range(r, _nanos, repr)
    rules = [_on_nanos(inner)] if inner else []
    if r.lt_now or r.gt_now or r.HasField("within"):
        within = _nanos(r.within) if r.HasField("within") else None
        _no_memo()  # the result now depends on when the check runs (none of Envoy's do)

        def relative(ts: Any) -> str | None:
            now = time.time_ns()
            n = _nanos(ts)
            if r.lt_now and n >= now:
                return "must be before now (lt_now)"
            if r.gt_now and n <= now:
                return "must be after now (gt_now)"
            if within is not None and abs(n - now) > within:
                return f"must be within {_show_nanos(within)} of now (within)"
            return None
        rules.append(relative)
    return rules


def _any(r: validate_pb2.AnyRules) -> list[Rule]:
    rules: list[Rule] = []
    if len(getattr(r, "in")):
        allowed = frozenset(getattr(r, "in"))
        rules.append(lambda a: None if a.type_url in allowed else
                     f"type_url must be one of {sorted(allowed)} (in), got {short(a.type_url)}")
    if len(r.not_in):
        banned = frozenset(r.not_in)
        rules.append(lambda a: None if a.type_url not in banned else
                     f"type_url must not be {short(a.type_url)} (not_in)")
    return rules


_SCALAR_KINDS = {
    "float": _float_numeric, "double": _float_numeric, "int32": _numeric, "int64": _numeric,
    "uint32": _numeric, "uint64": _numeric, "sint32": _numeric, "sint64": _numeric,
    "fixed32": _numeric, "fixed64": _numeric, "sfixed32": _numeric, "sfixed64": _numeric,
    "bool": lambda r: _membership(r, lambda x: x, repr, fast=True), "string": _string,
    "bytes": _bytes,
}


def _value_rules(rules: validate_pb2.FieldRules, fd: FieldDescriptor) -> list[Rule]:
    """The rules on one value of `fd`'s type (the wrapped value for a wrapper type)."""
    kind = rules.WhichOneof("type")
    if kind is None:
        return []
    sub = getattr(rules, kind)
    if kind in _SCALAR_KINDS:
        return _SCALAR_KINDS[kind](sub)
    if kind == "enum":
        return _enum(sub, fd)
    if kind == "duration":
        return _duration(sub)
    if kind == "timestamp":
        return _timestamp(sub)
    if kind == "any":
        return _any(sub)
    return []  # repeated/map are handled by the caller


def _ignore_empty(rules: validate_pb2.FieldRules) -> bool:
    kind = rules.WhichOneof("type")
    if kind is None:
        return False
    sub = getattr(rules, kind)
    return "ignore_empty" in sub.DESCRIPTOR.fields_by_name and sub.ignore_empty


def _required(rules: validate_pb2.FieldRules) -> bool:
    if rules.HasField("message") and rules.message.required:
        return True
    kind = rules.WhichOneof("type")
    return kind in ("duration", "timestamp", "any") and getattr(rules, kind).required


# -- plans -------------------------------------------------------------------------------
#
# A plan says, per message type, which fields can break a rule and how (the parts: rules
# on a value, on a repeated field or map as a whole, whether unset is an error). Two
# walkers are built from the same plans: the reference (closures, interpreted: `_walker`,
# `check_reference`), kept as the oracle the tests compare against, and the compiled one
# `check` runs (generated Python, one function per message type, see below).

@dataclass(frozen=True)
class _Elem:
    """The checks of one value of a field's type (one element of a repeated field, a map
    key or value)."""

    rules: tuple[Rule, ...]  # on the value (on the wrapped value for a wrapper type)
    ignore_empty: bool  # scalars and wrappers: a zero value is not checked
    message: bool
    wrapper: bool
    child: Descriptor | None  # a message type to walk (not a wrapper, not `skip`ped)


@dataclass(frozen=True)
class _Many:
    """The checks of a repeated field or a map: on the whole and on each element (items;
    keys and values)."""

    whole: tuple[Rule, ...]  # min/max items or pairs, unique
    items: _Elem | None
    keys: _Elem | None
    values: _Elem | None
    is_map: bool
    min_unset: str | None  # the violation when it is empty and must not be


@dataclass
class _Field:
    """How to check one field: `run(value, path, out)` when it is set, `unset(path, out)`
    (or None) when it is not; the parts they are made of, for the compiler."""

    number: int
    name: str
    run: Callable[[Any, str, Out], None] | None
    unset: Callable[[str, Out], None] | None
    fd: FieldDescriptor
    elem: _Elem | None  # singular fields
    many: _Many | None  # repeated fields and maps
    required: bool  # a message field that must be set


@dataclass
class _Plan:
    fields: dict[int, _Field]
    always: tuple[_Field, ...]  # fields whose rules apply even when unset
    required_oneofs: tuple[str, ...]
    extra: MessageCheck | None  # envoy_checks for this type
    own: tuple[Callable[[Any, str, Out], None], ...]  # whole-message checks (Duration range)
    # envoy_checks of a sub-message where this type holds it: (field names, check)
    at: tuple[tuple[tuple[str, ...], MessageCheck], ...] = ()


def _at_check(hops: tuple[str, ...], fn: MessageCheck) -> MessageCheck:
    """`fn` on the sub-message at `hops` (field names, oneof members included) when each
    of them is set."""
    def run(msg: Any, path: str, out: Out) -> None:
        for hop in hops:
            if not msg.HasField(hop):
                return
            msg = getattr(msg, hop)
            path = join(path, hop)
        fn(msg, path, out)
    return run


_PLANS: dict[str, _Plan | None] = {}
_BUILDING: set[str] = set()
_POOL = descriptor_pool.Default()
# Plans and compiled functions are built on first use, possibly from two threads.
_LOCK = threading.RLock()


def _field_rules(fd: FieldDescriptor) -> validate_pb2.FieldRules | None:
    opts = fd.GetOptions()
    if opts.HasExtension(validate_pb2.rules):
        return opts.Extensions[validate_pb2.rules]
    return None


def _report(rules: Iterable[Rule]) -> Callable[[Any, str, Out], None]:
    rules = tuple(rules)

    def run(value: Any, path: str, out: Out) -> None:
        for rule in rules:
            msg = rule(value)
            if msg is not None:
                out.append(Violation(path, msg))
    return run


def _elem(fd: FieldDescriptor, rules: validate_pb2.FieldRules | None) -> _Elem | None:
    """The checks of one value of `fd`'s type; None when there are none."""
    value_rules: list[Rule] = []
    ignore_empty = False
    skip = False
    if rules is not None:
        value_rules = _value_rules(rules, fd)
        ignore_empty = _ignore_empty(rules)
        skip = rules.HasField("message") and rules.message.skip
    if fd.type != FieldDescriptor.TYPE_MESSAGE:
        return _Elem(tuple(value_rules), ignore_empty, False, False, None) if value_rules \
            else None
    mtype = fd.message_type
    if mtype.full_name in _WRAPPERS:
        return _Elem(tuple(value_rules), ignore_empty, True, True, None) if value_rules \
            else None
    # _plan of a type being built (recursion) is a placeholder: assume it may need a walk.
    child = None if skip or _plan(mtype) is None else mtype
    if not value_rules and child is None:
        return None
    return _Elem(tuple(value_rules), False, True, False, child)


def _element_checker(e: _Elem | None) -> Callable[[Any, str, Out], None] | None:
    """The reference check of one value: its rules, then, for a message, its plan."""
    if e is None:
        return None
    report = _report(e.rules) if e.rules else None
    ignore_empty = e.ignore_empty
    if e.wrapper:
        assert report is not None

        def run_wrapper(value: Any, path: str, out: Out) -> None:
            if ignore_empty and not value.value:
                return
            report(value.value, path, out)
        return run_wrapper
    if not e.message:
        assert report is not None
        if ignore_empty:
            def run_scalar(value: Any, path: str, out: Out) -> None:
                if value:
                    report(value, path, out)
            return run_scalar
        return report
    walk = None if e.child is None else _walker(e.child)
    if report is None:
        return walk  # the common case: no rule on the field itself, one call less

    def run_message(value: Any, path: str, out: Out) -> None:
        report(value, path, out)
        if walk is not None:
            walk(value, path, out)
    return run_message


def _count_rule(kind: str, lo: int | None, hi: int | None) -> list[Rule]:
    """min/max items (kind "item") or pairs (kind "pair") of a repeated field or map."""
    key = "items" if kind == "item" else "pairs"
    rules: list[Rule] = []
    if lo is not None:
        rules.append(_fast(lambda v: None if len(v) >= lo else
                           f"must have at least {lo} {kind}(s) (min_{key}), got {len(v)}",
                           "len({v}) >= {b}", b=lo))
    if hi is not None:
        rules.append(_fast(lambda v: None if len(v) <= hi else
                           f"must have at most {hi} {kind}(s) (max_{key}), got {len(v)}",
                           "len({v}) <= {b}", b=hi))
    return rules


def _repeated_parts(fd: FieldDescriptor, rules: validate_pb2.FieldRules | None
                    ) -> _Many | None:
    rep = rules.repeated if rules is not None and rules.HasField("repeated") else None
    items = _elem(fd, rep.items if rep is not None and rep.HasField("items") else None)
    whole: list[Rule] = []
    min_unset = None
    if rep is not None:
        whole += _count_rule("item", rep.min_items if rep.HasField("min_items") else None,
                             rep.max_items if rep.HasField("max_items") else None)
        if rep.unique and fd.type != FieldDescriptor.TYPE_MESSAGE:
            whole.append(lambda v: None if len(set(v)) == len(v) else
                         f"items must be unique (unique), got {short(list(v))}")
        if rep.min_items > 0 and not rep.ignore_empty:
            min_unset = f"must have at least {rep.min_items} item(s) (min_items), got 0"
    if not whole and items is None:
        return None
    return _Many(tuple(whole), items, None, None, False, min_unset)


def _map_parts(fd: FieldDescriptor, rules: validate_pb2.FieldRules | None) -> _Many | None:
    m = rules.map if rules is not None and rules.HasField("map") else None
    entry = fd.message_type
    key_fd, value_fd = entry.fields_by_name["key"], entry.fields_by_name["value"]
    keys = _elem(key_fd, m.keys if m is not None and m.HasField("keys") else None)
    values = _elem(value_fd, m.values if m is not None and m.HasField("values") else None)
    whole: list[Rule] = []
    min_unset = None
    if m is not None:
        whole += _count_rule("pair", m.min_pairs if m.HasField("min_pairs") else None,
                             m.max_pairs if m.HasField("max_pairs") else None)
        # no_sparse: a message value of a Python map is never absent; nothing to check.
        if m.min_pairs > 0 and not m.ignore_empty:
            min_unset = f"must have at least {m.min_pairs} pair(s) (min_pairs), got 0"
    if not whole and keys is None and values is None:
        return None
    return _Many(tuple(whole), None, keys, values, True, min_unset)


def _many_checker(many: _Many) -> Callable[[Any, str, Out], None]:
    """The reference check of a repeated field or map that is set (not empty)."""
    whole = many.whole
    element = _element_checker(many.items)
    key_check = _element_checker(many.keys)
    value_check = _element_checker(many.values)

    def run(value: Any, path: str, out: Out) -> None:
        # ignore_empty: only ever run on a non-empty value, so nothing to skip here.
        for rule in whole:
            msg = rule(value)
            if msg is not None:
                out.append(Violation(path, msg))
        if element is not None:
            for i, item in enumerate(value):
                element(item, f"{path}[{i}]", out)
        if key_check is not None or value_check is not None:
            for key in value:
                at = f"{path}[{key!r}]"
                if key_check is not None:
                    key_check(key, f"{at}<key>", out)
                if value_check is not None:
                    value_check(value[key], at, out)
    return run


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.message_type is not None and fd.message_type.GetOptions().map_entry


def _field_plan(fd: FieldDescriptor) -> _Field | None:
    rules = _field_rules(fd)
    name = fd.name
    if fd.is_repeated:
        many = _map_parts(fd, rules) if _is_map(fd) else _repeated_parts(fd, rules)
        if many is None:
            return None
        unset = None
        if many.min_unset is not None:
            text = many.min_unset

            def unset(path: str, out: Out) -> None:
                out.append(Violation(path, text))
        return _Field(fd.number, name, _many_checker(many), unset, fd, None, many, False)
    elem = _elem(fd, rules)
    run = _element_checker(elem)
    unset = None
    required = False
    # A oneof member is checked only when it is the one set (PGV's switch on the case).
    if rules is not None and fd.containing_oneof is None:
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if _required(rules):
                required = True

                def unset(path: str, out: Out) -> None:
                    out.append(Violation(path, "is required (required)"))
        elif not fd.has_presence and run is not None:
            # proto3 scalars have no "unset": PGV checks the default value.
            default = fd.default_value
            check_default = run

            def unset(path: str, out: Out) -> None:
                check_default(default, path, out)
    if run is None and unset is None:
        return None
    return _Field(fd.number, name, run, unset, fd, elem, None, required)


def _message_disabled(desc: Descriptor) -> bool:
    opts = desc.GetOptions()
    for ext in (validate_pb2.disabled, validate_pb2.ignored):
        if opts.HasExtension(ext) and opts.Extensions[ext]:
            return True
    return False


def _plan(desc: Descriptor) -> _Plan | None:
    """The plan for `desc`, None when nothing under it can break a rule."""
    full = desc.full_name
    if full in _PLANS:
        return _PLANS[full]
    with _LOCK:
        if full in _PLANS:
            return _PLANS[full]
        if full in _BUILDING:
            # A recursive type (e.g. a matcher tree): walked lazily through _walker, so
            # assume it may need checking.
            return _Plan({}, (), (), None, ())
        _BUILDING.add(full)
        try:
            plan = _build_plan(desc)
        finally:
            _BUILDING.discard(full)
        _PLANS[full] = plan
        return plan


def _build_plan(desc: Descriptor) -> _Plan | None:
    full = desc.full_name
    extra = envoy_checks.CHECKS.get(full)
    at = tuple(envoy_checks.CHECKS_AT.get(full, ()))
    own: tuple[Callable[[Any, str, Out], None], ...] = ()
    if full == _DURATION:
        own = (_duration_range,)
    elif full == _TIMESTAMP:
        own = (_timestamp_range,)
    elif full == _ANY:
        own = (_walk_any,)
    if _message_disabled(desc):
        if extra is None and not own and not at:
            return None
        return _Plan({}, (), (), extra, own, at)
    fields: dict[int, _Field] = {}
    always = []
    for fd in desc.fields:
        fp = _field_plan(fd)
        if fp is None:
            continue
        if fp.run is not None:
            fields[fd.number] = fp
        if fp.unset is not None:
            always.append(fp)
    oneofs = tuple(o.name for o in desc.oneofs
                   if o.GetOptions().HasExtension(validate_pb2.required)
                   and o.GetOptions().Extensions[validate_pb2.required])
    if not fields and not always and not oneofs and extra is None and not own and not at:
        return None
    return _Plan(fields, tuple(always), oneofs, extra, own, at)


# -- the reference walker ----------------------------------------------------------------

def _walker(desc: Descriptor) -> Callable[[Any, str, Out], None] | None:
    """A function checking a message of type `desc`; None when there is nothing to check.
    The plan is looked up at call time, so recursive types work."""
    if desc.full_name in _BUILDING:
        full = desc.full_name
        return lambda msg, path, out: _walk_with(_PLANS.get(full), msg, path, out)
    plan = _plan(desc)
    if plan is None:
        return None
    return functools.partial(_walk_with, plan)  # a C-level call per message


def _walk_with(plan: _Plan | None, msg: Any, path: str, out: Out) -> None:
    if plan is None:
        return
    fields = plan.fields
    dot = path + "." if path else ""
    if plan.always:
        seen = set()
        for fd, value in msg.ListFields():
            number = fd.number
            seen.add(number)
            f = fields.get(number)
            if f is not None:
                f.run(value, dot + f.name, out)  # type: ignore[misc]
        for f in plan.always:
            if f.number not in seen:
                f.unset(dot + f.name, out)  # type: ignore[misc]
    else:
        for fd, value in msg.ListFields():
            f = fields.get(fd.number)
            if f is not None:
                f.run(value, dot + f.name, out)  # type: ignore[misc]
    for oneof in plan.required_oneofs:
        if msg.WhichOneof(oneof) is None:
            out.append(Violation(dot + oneof, "one of its fields must be set (oneof "
                                 "required)"))
    for own in plan.own:
        own(msg, path, out)
    if plan.extra is not None:
        plan.extra(msg, path, out)
    for hops, fn in plan.at:
        _at_check(hops, fn)(msg, path, out)


# -- well-known types --------------------------------------------------------------------

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


_ANY_CLASSES: dict[str, tuple[type[Message], Callable[[Any, str, Out], None]] | None] = {}


def _walk_any(a: any_pb2.Any, path: str, out: Out) -> None:
    """Envoy unpacks typed_config and friends and validates what they hold: so do we,
    when the descriptor pool knows the packed type."""
    url = a.type_url
    entry = _ANY_CLASSES.get(url, False)
    if entry is False:
        entry = None
        cls = _packed_class(url)
        if cls is not None:
            walk = _walker(cls.DESCRIPTOR)
            if walk is not None:
                entry = (cls, walk)
        _ANY_CLASSES[url] = entry
    if entry is None:
        return
    cls, walk = entry
    inner = _unpack(a, cls, path, out)
    if inner is not None:
        walk(inner, path, out)


_ANY_COMPILED: dict[str, tuple[type[Message], Callable[[Any, Out], None]] | None] = {}


def _walk_any_compiled(a: any_pb2.Any, path: str, out: Out) -> None:
    """`_walk_any` for the compiled walker."""
    url = a.type_url
    entry = _ANY_COMPILED.get(url, False)
    if entry is False:
        entry = None
        cls = _packed_class(url)
        if cls is not None:
            fn = _entry(cls)
            if fn is not None:
                entry = (cls, fn)
        _ANY_COMPILED[url] = entry
    if entry is None:
        return
    # The packed bytes are at hand: the same typed_config on every route is decoded and
    # walked once.
    value = a.value
    key = (url, value)
    found = _ANY_RESULTS.get(key) if _MEMO_OK else None
    if found is None:
        found_list: Out = []
        cls, fn = entry
        inner = _unpack(a, cls, "", found_list)
        if inner is not None:
            fn(inner, found_list)
        found = tuple(found_list)
        if len(_ANY_RESULTS) >= _MEMO_SIZE:
            _ANY_RESULTS.clear()
        if _MEMO_OK and len(value) <= 4 * _MEMO_KEY_MAX:
            _ANY_RESULTS[key] = found
    if found:
        start = len(out)
        out.extend(found)
        if path:
            _rebase(out, start, path)


_ANY_RESULTS: dict[tuple[str, bytes], tuple[Violation, ...]] = {}


# -- the compiled walker -----------------------------------------------------------------
#
# Each message type's plan becomes the source of one Python function `(msg, out)`, exec'd
# once: straight-line code that reads only the fields with checks (HasField, WhichOneof
# once per oneof, a proto3 scalar read as it is), inlines the simple rules as expressions
# (`_fast`; the rule's own closure is called for the message only when the expression
# fails), and inlines the walk of small sub-messages (an LbEndpoint's Endpoint, Address
# and SocketAddress are one function). A type with many fields with checks (Cluster,
# RouteAction) instead takes one ListFields() and dispatches the few set fields to a
# function per field. Violations carry paths relative to the function's message, built
# only when found, and are prefixed on the way back up (`_rebase`). The reference walker
# above is what the tests compare this one against.

_LISTFIELDS_OVER = 8  # fields with checks: above this, one ListFields() beats a HasField each
_INLINE_LINES = 120  # a sub-message whose checks take more lines is called, not inlined
_ELEMENT_LINES = 10  # the same for an element of a repeated field or a map

_NS: dict[str, Any] = {"_V": Violation}  # the generated code's globals
_FUNCTIONS: dict[str, str] = {}  # message full name -> its function's name in _NS
_SOURCES: dict[str, str] = {}  # message full name -> the generated source (for debugging)
_ENTRIES: dict[type, Callable[[Any, Out], None] | None] = {}
_NAMES = itertools.count()
_CONSTS: dict[int, str] = {}  # id of a value in _NS -> its name there
_SIZES: dict[str, int] = {}  # message full name -> lines of its checks, inlined


def _inline_size(desc: Descriptor) -> int:
    """How many lines checking a `desc` takes with what it inlines: the measure of whether
    to inline it. Per type, not per place, so what is inlined does not depend on the
    order types are first met (but for recursive types: the first met is called)."""
    full = desc.full_name
    size = _SIZES.get(full)
    if size is None:
        _SIZES[full] = 1 << 30  # a way back to it while measuring: call, never inline
        plan = _plan(desc)
        g = _Gen()
        if plan is not None and not _by_listfields(plan):
            g.body(plan, "m", "", 0, (full,))
            size = len(g.lines)
        else:
            size = 1 << 30  # many fields: one ListFields() in a function of its own
        _SIZES[full] = size
    return size


def _rebase(out: Out, start: int, prefix: str) -> None:
    """Prefix the paths of out[start:] (relative to a sub-message) with its path."""
    for k in range(start, len(out)):
        v = out[k]
        out[k] = Violation(f"{prefix}.{v.path}" if v.path else prefix, v.message)


_NS["_rebase"] = _rebase


# -- memos: a sub-message's violations by its serialized bytes
#
# Meshes repeat themselves: the same retry policy on every route, the same endpoint in a
# service's cluster and in its subset's. A sub-message the compiled walker calls rather
# than inlines is looked up by its bytes first (one C call) and walked only when new; the
# result (violations relative to it) is kept. Equal bytes are an equal message, so the
# answer is the same, as long as no rule depends on the time of the check (Envoy has none;
# building one turns memos off). Each type's memo watches its own hit rate and stops
# serializing when hits are rare, trying again now and then.

_MEMO_SIZE = 1 << 14  # entries per type; a full memo starts over
_MEMO_KEY_MAX = 1024  # bytes: bigger sub-messages are walked, not kept (memory)
_MEMO_PROBE = 400  # misses before judging the hit rate
_MEMO_RETRY = 1 << 12  # calls of `check` before memos that are off are tried again
_MEMO_OK = True


class _Memo:
    __slots__ = ("hits", "misses", "on", "table")

    def __init__(self) -> None:
        self.table: dict[bytes, tuple[Violation, ...]] = {}  # cleared, never replaced
        self.hits = self.misses = 0
        self.on = _MEMO_OK  # the generated code looks up only then


_MEMOS: dict[str, _Memo] = {}
_checks = 0  # calls of `check`, to try memos that are off again now and then


def _memo_put(memo: _Memo, key: bytes, out: Out, start: int) -> None:
    """Keep what a walk of a new sub-message found (out[start:]); judge the hit rate."""
    table = memo.table
    if len(table) >= _MEMO_SIZE:
        table.clear()
    if len(key) <= _MEMO_KEY_MAX:
        table[key] = tuple(out[start:])
    memo.misses += 1
    if memo.misses >= _MEMO_PROBE:
        if memo.hits * 4 < memo.misses:  # under 20% hits: not worth serializing
            memo.on = False
            table.clear()
        memo.hits = memo.misses = 0


def _retry_memos() -> None:
    if _MEMO_OK:
        for memo in _MEMOS.values():
            memo.on = True


def _no_memo() -> None:
    global _MEMO_OK
    _MEMO_OK = False
    for memo in _MEMOS.values():
        memo.table.clear()
        memo.on = False
    _ANY_RESULTS.clear()


def reset_memos() -> None:
    """Forget every memoised result (benchmarks measure a cold check with it)."""
    for memo in _MEMOS.values():
        memo.table.clear()
        memo.hits = memo.misses = 0
        memo.on = _MEMO_OK
    _ANY_RESULTS.clear()


_NS["_memo_put"] = _memo_put


# -- known-valid wire shapes
#
# The hand-written fast path, for what a mesh has most of: endpoints. An LbEndpoint that
# is exactly endpoint.address.socket_address {address: <IPv4>, port_value: <below 16384>}
# and maybe a health_status is recognised on its serialized bytes by one regex and its
# four lengths (the lengths make the regex's reading of the bytes protobuf's). Every such
# LbEndpoint passes every check (protocol TCP, address non-empty and an IP literal,
# port_specifier set and <= 65535, nothing else set), so it is not walked. A whole
# ClusterLoadAssignment that is a cluster_name and localities holding only such
# endpoints (what the translator makes) is taken the same way, serialized once (one C
# call) instead of walked through 4 messages per endpoint. Where the shape does not
# hold, the walk runs as everywhere else. That the shape implies every check holds for
# the rules and checks these types have today: `_SHAPE_FINGERPRINTS` pins them, and a
# change (new protos, an edited envoy_check) turns the fast path off until it is looked
# at again. tests/test_constraints.py compares it with the walk over random and mutated
# endpoints and assignments, and over bytes built to fool a regex that ignored lengths.

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


def _path_literal(frag: str) -> str:
    """Python source for a path fragment: field names, `[{i}]` and `[{k!r}]` parts (loop
    variables of the generated code) joined by dots."""
    return f'f"{frag}"' if "{" in frag else f'"{frag}"'


def _sub(frag: str, name: str) -> str:
    return f"{frag}.{name}" if frag else name


def _relevant(plan: _Plan) -> list[_Field]:
    fields = {f.number: f for f in plan.fields.values()}
    fields.update((f.number, f) for f in plan.always)
    return [fields[n] for n in sorted(fields)]


def _by_listfields(plan: _Plan) -> bool:
    return len(_relevant(plan)) > _LISTFIELDS_OVER


_At = tuple[tuple[tuple[str, ...], MessageCheck], ...]  # checks at sub-messages, by path


class _Gen:
    """One generated function's source."""

    def __init__(self, temps: Iterator[int] | None = None) -> None:
        self.lines: list[str] = []
        self.temps = itertools.count() if temps is None else temps

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def temp(self, base: str) -> str:
        return f"{base}{next(self.temps)}"

    @staticmethod
    def const(value: Any) -> str:
        """A global of the generated code holding `value` (one per object: _NS keeps
        it alive, so its id stays its own)."""
        name = _CONSTS.get(id(value))
        if name is None:
            name = _CONSTS[id(value)] = f"_k{next(_NAMES)}"
            _NS[name] = value
        return name

    def block_end(self, start: int, indent: int) -> None:
        """A block that turned out empty gets a `pass`."""
        if len(self.lines) == start:
            self.emit(indent, "pass")

    # -- values

    def rules(self, rules: Iterable[Rule], var: str, frag: str, ind: int) -> None:
        for rule in rules:
            fast = getattr(rule, "fast", None)
            nanos = getattr(rule, "nanos_fast", None)
            inner = ind
            if nanos is not None:
                self.emit(ind, f"_ns = {var}.seconds * 1000000000 + {var}.nanos")
                self.emit(ind, "if not (" + " and ".join(
                    "(" + expr.format(v="_ns", **{k: self.const(v) for k, v in consts.items()})
                    + ")" for expr, consts in nanos) + "):")
                inner = ind + 1
            elif fast is not None:
                expr, consts = fast
                self.emit(ind, "if not (" + expr.format(
                    v=var, **{k: self.const(v) for k, v in consts.items()}) + "):")
                inner = ind + 1
            self.emit(inner, f"_e = {self.const(rule)}({var})")
            self.emit(inner, "if _e is not None:")
            self.emit(inner + 1, f"out.append(_V({_path_literal(frag)}, _e))")

    def elem(self, e: _Elem, var: str, frag: str, ind: int, stack: tuple[str, ...],
             element: bool = False, at: _At = ()) -> bool:
        """Check value `var`; True when the checks `at` its sub-messages were placed."""
        if e.wrapper:
            w = self.temp("w")
            self.emit(ind, f"{w} = {var}.value")
            if e.ignore_empty:
                self.emit(ind, f"if {w}:")
                ind += 1
            self.rules(e.rules, w, frag, ind)
        elif not e.message:
            if e.ignore_empty:
                self.emit(ind, f"if {var}:")
                ind += 1
            self.rules(e.rules, var, frag, ind)
        else:
            self.rules(e.rules, var, frag, ind)
            if e.child is not None:
                return self.child(e.child, var, frag, ind, stack, element, at)
        return False

    def many(self, many: _Many, var: str, frag: str, ind: int, stack: tuple[str, ...]
             ) -> None:
        """A repeated field or map known to be non-empty."""
        self.rules(many.whole, var, frag, ind)
        if many.items is not None:
            i, e = self.temp("i"), self.temp("e")
            self.emit(ind, f"for {i}, {e} in enumerate({var}):")
            start = len(self.lines)
            self.elem(many.items, e, f"{frag}[{{{i}}}]", ind + 1, stack, element=True)
            self.block_end(start, ind + 1)
        if many.keys is not None or many.values is not None:
            k = self.temp("k")
            self.emit(ind, f"for {k} in {var}:")
            start = len(self.lines)
            at = f"{frag}[{{{k}!r}}]"
            if many.keys is not None:
                self.elem(many.keys, k, f"{at}<key>", ind + 1, stack)
            if many.values is not None:
                e = self.temp("e")
                self.emit(ind + 1, f"{e} = {var}[{k}]")
                self.elem(many.values, e, at, ind + 1, stack, element=True)
            self.block_end(start, ind + 1)

    # -- messages

    def call(self, call: str, frag: str, ind: int) -> None:
        """Emit `call`, which reports paths relative to the message at `frag`; prefix
        them with `frag` (only when it reported something)."""
        if not frag:
            self.emit(ind, call)
            return
        self.emit(ind, "_n = len(out)")
        self.emit(ind, call)
        self.emit(ind, "if len(out) != _n:")
        self.emit(ind + 1, f"_rebase(out, _n, {_path_literal(frag)})")

    def child(self, desc: Descriptor, var: str, frag: str, ind: int, stack: tuple[str, ...],
              element: bool = False, at: _At = ()) -> bool:
        """Check sub-message `var`: inlined when small, else a call to its function. The
        elements of repeated fields and maps (endpoints, routes, virtual hosts) are where
        a mesh repeats itself, so they are called through their memo unless tiny."""
        plan = _plan(desc)
        if plan is None:
            return False
        full = desc.full_name
        size = _inline_size(desc)
        if full not in stack and size <= (_ELEMENT_LINES if element else _INLINE_LINES):
            self.body(plan, var, frag, ind, (*stack, full), at)
            return True
        self.memo_call(desc, var, frag, ind)
        return False

    def memo_call(self, desc: Descriptor, var: str, frag: str, ind: int) -> None:
        """Call the function of `desc`, through its memo while that is on: the lookup
        inline, `_memo_put` only for what is new. With a known-valid wire shape (see
        `_SHAPES`) the walk runs only for bytes not of that shape."""
        memo = _MEMOS.setdefault(desc.full_name, _Memo())
        m, table = self.const(memo), self.const(memo.table)
        fn = _function(desc)
        shape = _fast_shape(desc)
        rebase = f"_rebase(out, _s, {_path_literal(frag)})"

        def walk(at: int) -> None:
            if shape is not None:
                self.emit(at, f"if not {self.const(shape)}(_b):")
                at += 1
            self.emit(at, f"{fn}({var}, out)")

        self.emit(ind, f"if {m}.on:")
        self.emit(ind + 1, f"_b = {var}.SerializePartialToString()")
        self.emit(ind + 1, f"_r = {table}.get(_b)")
        self.emit(ind + 1, "_s = len(out)")
        self.emit(ind + 1, "if _r is None:")
        walk(ind + 2)
        self.emit(ind + 2, f"_memo_put({m}, _b, out, _s)")
        self.emit(ind + 1, "else:")
        self.emit(ind + 2, f"{m}.hits += 1")
        self.emit(ind + 2, "if _r:")
        self.emit(ind + 3, "out.extend(_r)")
        self.emit(ind, "else:")
        self.emit(ind + 1, "_s = len(out)")
        if shape is not None:
            self.emit(ind + 1, f"_b = {var}.SerializePartialToString()")
        walk(ind + 1)
        if frag:
            self.emit(ind, "if len(out) != _s:")
            self.emit(ind + 1, rebase)

    def message_checks(self, plan: _Plan, var: str, frag: str, ind: int,
                       more: Iterable[MessageCheck] = ()) -> None:
        """The whole-message checks (own, envoy_checks, then `more`)."""
        checks = [_walk_any_compiled if c is _walk_any else c for c in plan.own]
        if plan.extra is not None:
            checks.append(plan.extra)
        checks += more
        for check_fn in checks:
            # These take (message, path, out): given "", they report relative paths. One
            # may carry a `fast` guard (as rules do): when it holds, it reports nothing.
            name = self.const(check_fn)
            fast = getattr(check_fn, "fast", None)
            at = ind
            if fast is not None:
                expr, consts = fast
                self.emit(ind, "if not (" + expr.format(
                    v=var, **{k: self.const(v) for k, v in consts.items()}) + "):")
                at = ind + 1
            self.call(f"{name}({var}, '', out)", frag, at)

    def required_oneofs(self, plan: _Plan, var: str, frag: str, ind: int,
                        which: dict[str, str]) -> None:
        for oneof in plan.required_oneofs:
            w = which.get(oneof)
            self.emit(ind, f"if {w} is None:" if w is not None else
                      f"if {var}.WhichOneof({oneof!r}) is None:")
            self.emit(ind + 1, f"out.append(_V({_path_literal(_sub(frag, oneof))}, "
                      "'one of its fields must be set (oneof required)'))")

    def set_field(self, f: _Field, var: str, frag: str, ind: int, stack: tuple[str, ...],
                  at: list[tuple[tuple[str, ...], MessageCheck]] | None = None) -> None:
        """Field `f` of `var`, known to be set: read it and check it. The checks `at` a
        sub-message below this field go down with it, into its inlined checks, and are
        taken off the list when placed there."""
        x = self.temp("x")
        self.emit(ind, f"{x} = {var}.{f.name}")
        if f.many is not None:
            self.many(f.many, x, _sub(frag, f.name), ind, stack)
        elif f.elem is not None:
            mine = [] if at is None else [(h, fn) for h, fn in at if h[0] == f.name]
            placed = self.elem(f.elem, x, _sub(frag, f.name), ind, stack,
                               at=tuple((h[1:], fn) for h, fn in mine))
            if placed and at is not None:
                at[:] = [a for a in at if a not in mine]

    def body(self, plan: _Plan, var: str, frag: str, ind: int, stack: tuple[str, ...],
             at: _At = ()) -> None:
        """Check message `var` field by field (HasField / WhichOneof), in field order,
        then as a whole; `at`: checks of its sub-messages that its holder was given."""
        pending = [*plan.at, *at]
        here = [fn for hops, fn in pending if not hops]
        pending = [(hops, fn) for hops, fn in pending if hops]
        relevant = _relevant(plan)
        groups: dict[str, list[_Field]] = {}
        for f in relevant:
            if f.fd.containing_oneof is not None:
                groups.setdefault(f.fd.containing_oneof.name, []).append(f)
        which: dict[str, str] = {}
        for f in relevant:
            fd, name = f.fd, f.name
            oneof = fd.containing_oneof
            if oneof is not None:
                if oneof.name in which:
                    continue
                members = groups[oneof.name]
                if len(members) == 1 and oneof.name not in plan.required_oneofs:
                    # (also proto3 `optional`, whose oneof is synthetic)
                    which[oneof.name] = ""
                    self.emit(ind, f"if {var}.HasField({name!r}):")
                    start = len(self.lines)
                    self.set_field(f, var, frag, ind + 1, stack, pending)
                    self.block_end(start, ind + 1)
                    continue
                w = which[oneof.name] = self.temp("w")
                self.emit(ind, f"{w} = {var}.WhichOneof({oneof.name!r})")
                keyword = "if"
                for m in members:
                    self.emit(ind, f"{keyword} {w} == {m.name!r}:")
                    start = len(self.lines)
                    self.set_field(m, var, frag, ind + 1, stack, pending)
                    self.block_end(start, ind + 1)
                    keyword = "elif"
                continue
            if f.many is not None:
                x = self.temp("x")
                self.emit(ind, f"{x} = {var}.{name}")
                self.emit(ind, f"if len({x}):")
                start = len(self.lines)
                self.many(f.many, x, _sub(frag, name), ind + 1, stack)
                self.block_end(start, ind + 1)
                if f.many.min_unset is not None:
                    self.emit(ind, "else:")
                    self.emit(ind + 1, f"out.append(_V({_path_literal(_sub(frag, name))}, "
                              f"{self.const(f.many.min_unset)}))")
            elif fd.type == FieldDescriptor.TYPE_MESSAGE or fd.has_presence:
                if f.elem is not None:
                    self.emit(ind, f"if {var}.HasField({name!r}):")
                    start = len(self.lines)
                    self.set_field(f, var, frag, ind + 1, stack, pending)
                    self.block_end(start, ind + 1)
                    if f.required:
                        self.emit(ind, "else:")
                elif f.required:
                    self.emit(ind, f"if not {var}.HasField({name!r}):")
                if f.required:
                    self.emit(ind + 1, f"out.append(_V({_path_literal(_sub(frag, name))}, "
                              "'is required (required)'))")
            else:
                # A proto3 scalar: its value is checked whether set or not (PGV checks
                # the default), so read it as it is.
                self.set_field(f, var, frag, ind, stack)
        self.required_oneofs(plan, var, frag, ind, {k: v for k, v in which.items() if v})
        # Checks at sub-messages that were not inlined here: navigate to them.
        self.message_checks(plan, var, frag, ind,
                            [*here, *(_at_check(hops, fn) for hops, fn in pending)])


def _exec(source: str, label: str) -> None:
    exec(compile(source, f"<constraints {label}>", "exec"), _NS)  # our own generated code


def _function(desc: Descriptor) -> str:
    """The name in _NS of the check of `desc` (whose plan is not None). Until first
    called, the name holds a stand-in that compiles the function and takes its place:
    of the types a resource could hold, few ever do, and compiling is the slow part."""
    full = desc.full_name
    name = _FUNCTIONS.get(full)
    if name is not None:
        return name
    name = _FUNCTIONS[full] = f"_w{next(_NAMES)}_{desc.name}"

    def compile_then_run(m: Any, out: Out) -> None:
        with _LOCK:
            if _NS[name] is compile_then_run:
                _compile(desc, name)
        _NS[name](m, out)
    _NS[name] = compile_then_run
    return name


def _compile(desc: Descriptor, name: str, plan: _Plan | None = None) -> None:
    """Generate and exec the function `name` checking a `desc` (by `plan`, else its
    own)."""
    full = desc.full_name
    plan = plan if plan is not None else _plan(desc)
    assert plan is not None
    g = _Gen()
    g.emit(0, f"def {name}(m, out):")
    stack = (full,)
    if not _by_listfields(plan):
        g.body(plan, "m", "", 1, stack)
    else:
        # One ListFields(), each set field with checks to its own function; then what
        # applies when unset: proto3 scalars (read as they are), required messages, empty
        # repeated fields with min_items, required oneofs.
        dispatch: dict[int, Callable[[Any, Out], None]] = {}
        post: list[_Field] = []
        for f in _relevant(plan):
            fd = f.fd
            scalar_always = (f.many is None and fd.type != FieldDescriptor.TYPE_MESSAGE
                             and fd.containing_oneof is None and not fd.has_presence)
            if scalar_always:
                post.append(f)
                continue
            if f.required or (f.many is not None and f.many.min_unset is not None):
                post.append(f)
            if f.many is None and f.elem is None:
                continue
            fg = _Gen()
            fname = f"_f{next(_NAMES)}_{desc.name}_{f.name}"
            fg.emit(0, f"def {fname}(x, out):")
            if f.many is not None:
                fg.many(f.many, "x", f.name, 1, stack)
            else:
                # A sub-message of a big message (a Cluster's circuit breakers, a route's
                # retry policy) is often the same in many resources: through its memo.
                fg.elem(f.elem, "x", f.name, 1, stack, element=True)  # type: ignore[arg-type]
            fg.block_end(1, 1)
            source = "\n".join(fg.lines)
            _exec(source, f"{full}.{f.name}")
            _SOURCES[f"{full}.{f.name}"] = source
            dispatch[f.number] = _NS[fname]
        table = g.const(dispatch)
        g.emit(1, "for fd, x in m.ListFields():")
        g.emit(2, f"f = {table}.get(fd.number)")
        g.emit(2, "if f is not None:")
        g.emit(3, "f(x, out)")
        for f in post:
            at = _path_literal(f.name)
            if f.many is not None:
                g.emit(1, f"if not len(m.{f.name}):")
                g.emit(2, f"out.append(_V({at}, {g.const(f.many.min_unset)}))")
            elif f.required:
                g.emit(1, f"if not m.HasField({f.name!r}):")
                g.emit(2, f"out.append(_V({at}, 'is required (required)'))")
            else:
                g.set_field(f, "m", "", 1, stack)
        g.required_oneofs(plan, "m", "", 1, {})
        g.message_checks(plan, "m", "", 1, [_at_check(h, fn) for h, fn in plan.at])
    g.block_end(1, 1)
    source = "\n".join(g.lines)
    _exec(source, full)
    _SOURCES[full] = source


def _entry(cls: type) -> Callable[[Any, Out], None] | None:
    """The compiled check of messages of class `cls`; None when nothing can break."""
    fn = _ENTRIES.get(cls, False)
    if fn is not False:
        return fn  # type: ignore[return-value]
    with _LOCK:
        desc = cls.DESCRIPTOR  # type: ignore[attr-defined]
        known = set(_FUNCTIONS)
        try:
            fn = None
            if _plan(desc) is not None:
                name = _function(desc)
                if _NS[name].__name__ == "compile_then_run":  # compile now: the entry is kept
                    _compile(desc, name)
                fn = _NS[name]
        except BaseException:
            for full in set(_FUNCTIONS) - known:  # half-built: build again next time
                del _FUNCTIONS[full]
            raise
        shape = _fast_shape(desc)
        if fn is not None and shape is not None:
            fn = _shaped(shape, fn)
        elif fn is not None and desc.full_name in _APART:
            fn = _apart(desc, fn)
        _ENTRIES[cls] = fn
    return fn


def _shaped(shape: Callable[[bytes], bool], walk: Callable[[Any, Out], None]
            ) -> Callable[[Any, Out], None]:
    def run(msg: Any, out: Out) -> None:
        if not shape(msg.SerializePartialToString()):
            walk(msg, out)
    return run


# -- resources memoised apart from their names
#
# Each cluster has its own name (and EDS service name), and is otherwise often the same
# as many others (one traffic policy for a whole namespace). A Cluster is checked in two
# parts: its name and eds_cluster_config, walked every time, and the rest, memoised by
# its bytes without those two fields (cut from the leading fields of the serialization,
# which protobuf writes in field-number order). Sound while no check of the rest reads
# the fields set apart: they are in no required oneof and no at-check path starts in
# them (tested when the parts are built), and the message-wide envoy_check does not read
# them, which `_APART_FINGERPRINTS` pins to the check's source (a change turns this off).

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


# -- entry points ------------------------------------------------------------------------

def check(message: Any, path: str = "") -> list[Violation]:
    """Every PGV rule and Envoy code check `message` (any Envoy resource) breaks."""
    global _checks
    _checks += 1
    if _checks >= _MEMO_RETRY:
        _checks = 0
        _retry_memos()
    out: Out = []
    fn = _ENTRIES.get(type(message), False)
    if fn is False:
        fn = _entry(type(message))
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
