"""PGV rules compiled to closures: the `validate.rules` option of a field (FieldRules)
becomes a list of `Rule`s, each taking a value and saying why it breaks the rule, or None.
A rule the compiled walker may test inline carries a Python expression for it (`_fast`).
"""

from __future__ import annotations

import ipaddress
import math
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import re2
from google.protobuf.descriptor import FieldDescriptor
from validate import validate_pb2

from controlplane.translate.constraints.memos import _no_memo
from controlplane.translate.violations import IPV4, Rule, short

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
            def length_rule(v: Any, bound: int = bound, cmp: Any = cmp, txt: str = txt,
                            name: str = name) -> str | None:
                return None if cmp(length(v), bound) else (
                    f"length must be {txt} {bound} {unit} ({name}), got "
                    f"{length(v)}: {short(v)}")
            rules.append(_fast(length_rule, f"len({{v}}) {op} {{b}}", b=bound))
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
            def header_rule(v: Any, pattern: Any = pattern, what: str = what) -> str | None:
                return None if pattern.search(v) is not None else (
                    f"must be {what} (well_known_regex), got {short(v)}")
            rules.append(_fast(header_rule, expr, **consts))
    elif kind in ("hostname", "ip", "ipv4", "ipv6", "address", "uuid") and getattr(r, kind):
        test: Callable[[str], bool] = {
            "hostname": _is_hostname, "ip": _is_ip,
            "ipv4": lambda v: _is_ip(v, 4), "ipv6": lambda v: _is_ip(v, 6),
            "address": lambda v: _is_hostname(v) or _is_ip(v), "uuid": _is_uuid}[kind]
        def well_known(v: Any, test: Callable[[str], bool] = test, kind: str = kind
                       ) -> str | None:
            return None if test(v) else f"must be a valid {kind}, got {short(v)}"
        rules.append(well_known)
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
        enum_type = fd.enum_type
        assert enum_type is not None  # an enum field's descriptor names its type
        defined = frozenset(v.number for v in enum_type.values)
        name = enum_type.full_name
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


def _field_rules(fd: FieldDescriptor) -> validate_pb2.FieldRules | None:
    opts = fd.GetOptions()
    if opts.HasExtension(validate_pb2.rules):
        return opts.Extensions[validate_pb2.rules]
    return None


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
