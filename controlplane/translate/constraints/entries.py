"""The compiled walker's entry per message class (what `check` calls): the class's
generated function, behind its known-valid wire shape (shapes.py) or split apart from its
names (apart.py) where one applies; and the compiled walk of what an Any packs, which
goes through the packed class's entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import Message

from controlplane.translate.constraints import memos
from controlplane.translate.constraints.apart import _APART, _apart
from controlplane.translate.constraints.codegen import (
    _COMPILED_INSTEAD,
    _FUNCTIONS,
    _NS,
    _compile,
    _function,
    _rebase,
)
from controlplane.translate.constraints.memos import _ANY_RESULTS, _MEMO_KEY_MAX, _MEMO_SIZE
from controlplane.translate.constraints.plans import _LOCK, _plan, _walk_any
from controlplane.translate.constraints.shapes import _fast_shape
from controlplane.translate.constraints.wellknown import _packed_class, _unpack
from controlplane.translate.violations import Out

_ENTRIES: dict[type, Callable[[Any, Out], None] | None] = {}


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


_ANY_COMPILED: dict[str, tuple[type[Message], Callable[[Any, Out], None]] | None] = {}


def _walk_any_compiled(a: any_pb2.Any, path: str, out: Out) -> None:
    """`plans._walk_any` for the compiled walker."""
    url = a.type_url
    if url in _ANY_COMPILED:
        entry = _ANY_COMPILED[url]
    else:
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
    found = _ANY_RESULTS.get(key) if memos._MEMO_OK else None
    if found is None:
        found_list: Out = []
        cls, fn = entry
        inner = _unpack(a, cls, "", found_list)
        if inner is not None:
            fn(inner, found_list)
        found = tuple(found_list)
        if len(_ANY_RESULTS) >= _MEMO_SIZE:
            _ANY_RESULTS.clear()
        if memos._MEMO_OK and len(value) <= 4 * _MEMO_KEY_MAX:
            _ANY_RESULTS[key] = found
    if found:
        start = len(out)
        out.extend(found)
        if path:
            _rebase(out, start, path)


# The generated code runs this for an Any (see codegen._COMPILED_INSTEAD).
_COMPILED_INSTEAD[_walk_any] = _walk_any_compiled
