"""The compiled walker's code generator.

Each message type's plan becomes the source of one Python function `(msg, out)`, exec'd
once: straight-line code that reads only the fields with checks (HasField, WhichOneof
once per oneof, a proto3 scalar read as it is), inlines the simple rules as expressions
(`_fast`; the rule's own closure is called for the message only when the expression
fails), and inlines the walk of small sub-messages (an LbEndpoint's Endpoint, Address
and SocketAddress are one function). A type with many fields with checks (Cluster,
RouteAction) instead takes one ListFields() and dispatches the few set fields to a
function per field. Violations carry paths relative to the function's message, built
only when found, and are prefixed on the way back up (`_rebase`). The reference walker
(plans.py) is what the tests compare this one against.

One module over 400 lines, for a reason: the generator (`_Gen`) and the compiling of the
functions it calls (`_function`, `_compile`, `_inline_size`) are one recursion (generating
a message's check sizes its sub-messages' and compiles them on first use), so they are
not split. The entry per message class that `check` calls is in entries.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from controlplane.translate.constraints.memos import _MEMOS, _Memo, _memo_put
from controlplane.translate.constraints.plans import (
    _LOCK,
    _at_check,
    _Elem,
    _Field,
    _Many,
    _Plan,
    _plan,
)
from controlplane.translate.constraints.shapes import _fast_shape
from controlplane.translate.violations import MessageCheck, Out, Rule, Violation

_LISTFIELDS_OVER = 8  # fields with checks: above this, one ListFields() beats a HasField each
_INLINE_LINES = 120  # a sub-message whose checks take more lines is called, not inlined
_ELEMENT_LINES = 10  # the same for an element of a repeated field or a map

_NS: dict[str, Any] = {"_V": Violation}  # the generated code's globals
_FUNCTIONS: dict[str, str] = {}  # message full name -> its function's name in _NS
_SOURCES: dict[str, str] = {}  # message full name -> the generated source (for debugging)
_NAMES = itertools.count()
_CONSTS: dict[int, str] = {}  # id of a value in _NS -> its name there
_SIZES: dict[str, int] = {}  # message full name -> lines of its checks, inlined
# What the generated code runs in place of a whole-message check of the plans (the
# reference walker's): the Any's walk through the compiled entries, which entries.py
# registers (it needs the entries, which need this module).
_COMPILED_INSTEAD: dict[MessageCheck, MessageCheck] = {}


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
_NS["_memo_put"] = _memo_put


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
        checks = [_COMPILED_INSTEAD.get(c, c) for c in plan.own]
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
