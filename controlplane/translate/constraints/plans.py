"""Plans, and the reference walker that interprets them.

A plan says, per message type, which fields can break a rule and how (the parts: rules
on a value, on a repeated field or map as a whole, whether unset is an error). Two
walkers are built from the same plans: the reference (closures, interpreted: `_walker`,
`check_reference`), kept as the oracle the tests compare against, and the compiled one
`check` runs (generated Python, one function per message type: codegen.py).

One module over 400 lines, for a reason: the plans and the reference walker are one
recursion (a plan's fields hold the reference walker's closures, `_Field.run` and
`.unset`, built with the plan; the walker looks plans up as it goes down, lazily for
recursive types), so they are not split. What an Any packs is walked here too
(`_walk_any`), by the same walker.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from validate import validate_pb2

from controlplane.translate import envoy_checks
from controlplane.translate.constraints.rules import (
    _count_rule,
    _field_rules,
    _ignore_empty,
    _required,
    _value_rules,
)
from controlplane.translate.constraints.wellknown import (
    _ANY,
    _DURATION,
    _TIMESTAMP,
    _WRAPPERS,
    _duration_range,
    _packed_class,
    _timestamp_range,
    _unpack,
)
from controlplane.translate.violations import MessageCheck, Out, Rule, Violation, join, short


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
# Plans and compiled functions are built on first use, possibly from two threads.
_LOCK = threading.RLock()


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
    assert mtype is not None  # a message field's descriptor names its type
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
    assert entry is not None  # a map field is a repeated map-entry message
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
    unset: Callable[[str, Out], None] | None = None
    if fd.is_repeated:
        many = _map_parts(fd, rules) if _is_map(fd) else _repeated_parts(fd, rules)
        if many is None:
            return None
        if many.min_unset is not None:
            text = many.min_unset

            def unset(path: str, out: Out) -> None:
                out.append(Violation(path, text))
        return _Field(fd.number, name, _many_checker(many), unset, fd, None, many, False)
    elem = _elem(fd, rules)
    run = _element_checker(elem)
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


_ANY_CLASSES: dict[str, tuple[type[Message], Callable[[Any, str, Out], None]] | None] = {}


def _walk_any(a: any_pb2.Any, path: str, out: Out) -> None:
    """Envoy unpacks typed_config and friends and validates what they hold: so do we,
    when the descriptor pool knows the packed type."""
    url = a.type_url
    if url in _ANY_CLASSES:
        entry = _ANY_CLASSES[url]
    else:
        entry = None
        cls = _packed_class(url)
        if cls is not None:
            walk = _walker(cls.DESCRIPTOR)  # type: ignore[arg-type]  # upb's Descriptor
            if walk is not None:
                entry = (cls, walk)
        _ANY_CLASSES[url] = entry
    if entry is None:
        return
    cls, walk = entry
    inner = _unpack(a, cls, path, out)
    if inner is not None:
        walk(inner, path, out)
