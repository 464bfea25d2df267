"""Reading a VirtualService's header operations (`headers.request`/`headers.response`:
set, add, remove) and checking header names and values as Istio does, so Envoy never
receives an operation it would refuse.
"""

from __future__ import annotations

from typing import Any

from controlplane.model.errors import Errors
from controlplane.model.fields import as_list, as_map, reject_unknown_fields, type_name
from controlplane.model.istio_common import check_header_name
from controlplane.model.virtual_service import HeaderOperations, Headers

# Headers a route's operations may not touch (Istio, and Envoy's own rule); a request
# set/add of the authority is Istio's way of writing an authority rewrite.
_AUTHORITY_HEADERS = (":authority", "host")
# Characters Istio refuses in a header value (protoc-gen-validate's set, minus tab).
_BAD_VALUE_CHARS = {chr(c) for c in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F)}


def check_header_value(value: str, path: str, errs: Errors) -> None:
    """Istio's ValidateHTTPHeaderValue: no control characters, and every unescaped `%`
    opens a `%VAR%` or `%VAR(args)%` that is closed (`%%` is a literal %). Which
    variables exist is not checked, as Istio does not."""
    if _BAD_VALUE_CHARS & set(value):
        errs.add(path, "must not contain control characters (CR, LF, NUL...)")
        return
    problem = _header_value_problem(value)
    if problem:
        errs.add(path, f"{problem} in {value[:80]!r}; write a literal % as %%")


def _header_value_problem(value: str) -> str:
    state, i = "literal", 0
    while i < len(value):
        ch = value[i]
        if state == "literal":
            if ch == "%":
                if i + 1 == len(value):
                    return "an unescaped % at the end"
                if value[i + 1] == "%":
                    i += 1
                else:
                    state = "name"
        elif state == "name":
            if ch == "%":
                state = "literal"
            elif ch == "(":
                state = "args"
        elif state == "args":  # an argument list, JSON-ish array or bare string
            if ch == "[":
                state = "expect_string"
            elif ch != " ":
                state = "string"
        elif state == "expect_string":
            if ch == '"':
                state = "string"
            elif ch != " ":
                return "an argument list expecting '\"'"
        elif state == "string":
            if ch == "\\":
                if i + 1 == len(value):
                    return "an unterminated backslash"
                i += 1
            elif ch == ")":
                state = "expect_end"
            elif ch == '"':
                state = "delimiter"
        elif state == "delimiter":
            if ch == ",":
                state = "expect_string"
            elif ch == "]":
                state = "args_end"
            elif ch != " ":
                return "an argument list expecting ',' or ']'"
        elif state == "args_end":
            if ch == ")":
                state = "expect_end"
            elif ch != " ":
                return "an argument list expecting ')'"
        elif state == "expect_end":
            if ch == "%":
                state = "literal"
            elif ch != " ":
                return "a variable expecting its closing %"
        i += 1
    return "" if state == "literal" else "an unterminated %VARIABLE%"


def _operation_name(name: Any, path: str, errs: Errors, *, authority_ok: bool) -> str:
    """A header name an operation may use: Istio refuses `:`-prefixed names and `host`
    (except the authority in a request set/add, see `_header_ops`)."""
    if isinstance(name, str) and (name.startswith(":") or name.lower() == "host"):
        if not (authority_ok and name.lower() in _AUTHORITY_HEADERS):
            errs.add(path, f"{name!r} cannot be modified (a pseudo-header or Host)")
        return name
    return check_header_name(name, path, errs)


def _header_ops(raw: Any, path: str, errs: Errors, *, request: bool = False
                ) -> tuple[HeaderOperations, str | None]:
    """The operations, and the authority a request set/add writes (Istio turns that into
    an authority rewrite: Envoy may not modify the header itself)."""
    ops = as_map(raw, path, errs)
    reject_unknown_fields(ops, {"set", "add", "remove"}, path, errs,
                          hint="use set, add or remove")
    authority: list[str] = []

    def pairs(key: str) -> tuple[tuple[str, str], ...]:
        out = []
        for name, value in sorted(as_map(ops.get(key), f"{path}.{key}", errs).items(),
                                  key=lambda kv: str(kv[0])):
            fpath = f"{path}.{key}.{name}"
            name = _operation_name(name, fpath, errs, authority_ok=request)
            if not isinstance(value, str):
                errs.add(fpath, f"must be a string, got {type_name(value)}")
                continue
            check_header_value(value, fpath, errs)
            if name.lower() in _AUTHORITY_HEADERS:
                if authority:
                    errs.add(fpath, "the authority is set more than once")
                authority.append(value)
                continue
            out.append((name, value))
        return tuple(out)
    remove = tuple(_operation_name(n, f"{path}.remove[{i}]", errs, authority_ok=False)
                   for i, n in enumerate(as_list(ops.get("remove"), f"{path}.remove", errs)))
    return (HeaderOperations(set=pairs("set"), add=pairs("add"), remove=remove),
            authority[0] if authority else None)


def parse_headers(raw: Any, path: str, errs: Errors) -> tuple[Headers, str | None]:
    """A route's or destination's `headers`, and the authority its request set/add
    writes (None if it writes none)."""
    h = as_map(raw, path, errs)
    reject_unknown_fields(h, {"request", "response"}, path, errs,
                          hint="use request or response")
    request, authority = _header_ops(h.get("request"), f"{path}.request", errs, request=True)
    response, _ = _header_ops(h.get("response"), f"{path}.response", errs)
    return Headers(request=request, response=response), authority
