"""Istio's VirtualService: ordered HTTP routes (first match wins) and TCP routes.

Validation follows Istio's own where Istio has it (weights add up to 100, one action per
route, rewrite not with redirect...) and adds what Envoy would otherwise reject (RE2
regexes, header names, status ranges), so an object either passes whole, or is rejected
naming every bad field and never reaches a proxy. Fields that select by the *client*
proxy (sourceLabels, sourceNamespace, gateways in a match) are accepted with a warning and
ignored: routes here are shared by every sidecar.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field, replace
from typing import Any

from controlplane.model.errors import Errors
from controlplane.model.fields import (
    as_bool,
    as_int,
    as_istio_duration,
    as_list,
    as_map,
    as_str,
    type_name,
)
from controlplane.model.istio_common import (
    SUBSET_NAME,
    StringMatch,
    check_header_name,
    check_host,
    check_regex,
    parse_percent,
    parse_string_match,
)
from controlplane.model.meta import Meta, parse_meta

# Envoy's retry_on policies (router filter, x-envoy-retry-on and x-envoy-retry-grpc-on).
RETRY_POLICIES = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
    "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
    "retriable-headers", "http3-post-connect-failure", "cancelled", "deadline-exceeded",
    "internal", "resource-exhausted", "unavailable",
})
ISTIO_DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled," \
                         "retriable-status-codes"
GRPC_STATUS = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}
REDIRECT_CODES = (301, 302, 303, 307, 308)
# Headers a route's operations may not touch (Istio, and Envoy's own rule); a request
# set/add of the authority is Istio's way of writing an authority rewrite.
_AUTHORITY_HEADERS = (":authority", "host")
# Characters Istio refuses in a header value (protoc-gen-validate's set, minus tab).
_BAD_VALUE_CHARS = {chr(c) for c in (*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F)}


@dataclass(frozen=True)
class HTTPMatch:
    uri: StringMatch | None = None
    headers: tuple[tuple[str, StringMatch | None], ...] = ()  # None: header must be present
    without_headers: tuple[tuple[str, StringMatch | None], ...] = ()
    method: StringMatch | None = None
    authority: StringMatch | None = None
    query_params: tuple[tuple[str, StringMatch | None], ...] = ()
    ignore_uri_case: bool = False
    port: int | None = None


@dataclass(frozen=True)
class HeaderOperations:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@dataclass(frozen=True)
class Headers:
    request: HeaderOperations = HeaderOperations()
    response: HeaderOperations = HeaderOperations()


@dataclass(frozen=True)
class Destination:
    host: str
    subset: str = ""
    port: int | None = None


@dataclass(frozen=True)
class WeightedDestination:
    destination: Destination
    weight: int
    headers: Headers = Headers()


@dataclass(frozen=True)
class Retries:
    attempts: int
    per_try_timeout: float | None = None
    retry_on: str = ISTIO_DEFAULT_RETRY_ON  # Envoy policies, comma-separated
    retriable_status_codes: tuple[int, ...] = (503,)


@dataclass(frozen=True)
class FaultDelay:
    seconds: float
    percent: float = 100.0


@dataclass(frozen=True)
class FaultAbort:
    http_status: int | None = None
    grpc_status: int | None = None
    percent: float = 100.0


@dataclass(frozen=True)
class Fault:
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


@dataclass(frozen=True)
class Mirror:
    destination: Destination
    percent: float = 100.0


@dataclass(frozen=True)
class Rewrite:
    uri: str | None = None
    authority: str | None = None
    uri_regex: tuple[str, str] | None = None  # (pattern, substitution)


@dataclass(frozen=True)
class Redirect:
    uri: str = ""
    authority: str = ""
    port: int | None = None
    scheme: str = ""
    code: int = 301


@dataclass(frozen=True)
class DirectResponse:
    status: int
    body: bytes | None = None


@dataclass(frozen=True)
class CorsPolicy:
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: float | None = None
    allow_credentials: bool | None = None


@dataclass(frozen=True)
class HTTPRoute:
    name: str
    matches: tuple[HTTPMatch, ...]  # empty: matches everything
    route: tuple[WeightedDestination, ...] = ()
    timeout: float | None = None  # seconds; None: no timeout, as in Istio
    retries: Retries | None = None  # None: Istio's default policy
    fault: Fault | None = None
    mirrors: tuple[Mirror, ...] = ()
    rewrite: Rewrite | None = None
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    headers: Headers = Headers()
    cors: CorsPolicy | None = None


@dataclass(frozen=True)
class TCPRoute:
    ports: tuple[int, ...]  # empty: every port of the host
    route: tuple[WeightedDestination, ...]


@dataclass(frozen=True)
class VirtualService:
    meta: Meta
    hosts: tuple[str, ...]
    gateways: tuple[str, ...]
    http: tuple[HTTPRoute, ...]
    tcp: tuple[TCPRoute, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def applies_to_sidecars(self) -> bool:
        return not self.gateways or "mesh" in self.gateways


def _named_matches(raw: Any, path: str, errs: Errors) -> tuple[tuple[str, StringMatch | None],
                                                               ...]:
    out = []
    for name, m in sorted(as_map(raw, path, errs).items()):
        if not isinstance(name, str) or not name:
            errs.add(path, "names must be non-empty strings")
            continue
        # Istio: an empty match object means "present".
        out.append((name, parse_string_match(m, f"{path}.{name}", errs) if m else None))
    return tuple(out)


_MATCH_FIELDS = {"name", "uri", "scheme", "method", "authority", "headers", "port",
                 "queryParams", "ignoreUriCase", "withoutHeaders"}
_MATCH_IGNORED = {"sourceLabels", "gateways", "sourceNamespace", "statPrefix"}


def _optional_match(m: dict[str, Any], key: str, path: str, errs: Errors
                    ) -> StringMatch | None:
    return parse_string_match(m[key], f"{path}.{key}", errs) if key in m else None


def _parse_match(raw: Any, path: str, errs: Errors, warnings: list[str]) -> HTTPMatch:
    m = as_map(raw, path, errs)
    for key in sorted(set(m) - _MATCH_FIELDS):
        if key in _MATCH_IGNORED:
            warnings.append(f"{path}.{key}: selects by the client proxy; not supported, "
                            "the match ignores it")
        else:
            errs.add(f"{path}.{key}", "unknown field")
    if "scheme" in m:
        warnings.append(f"{path}.scheme: not supported, the match ignores it")
    headers = _named_matches(m.get("headers"), f"{path}.headers", errs)
    for name, _ in headers:
        check_header_name(name, f"{path}.headers.{name}", errs)
    return HTTPMatch(
        uri=_optional_match(m, "uri", path, errs),
        headers=headers,
        without_headers=_named_matches(m.get("withoutHeaders"), f"{path}.withoutHeaders", errs),
        method=_optional_match(m, "method", path, errs),
        authority=_optional_match(m, "authority", path, errs),
        query_params=_named_matches(m.get("queryParams"), f"{path}.queryParams", errs),
        ignore_uri_case=as_bool(m.get("ignoreUriCase"), f"{path}.ignoreUriCase", errs),
        port=as_int(m.get("port"), f"{path}.port", errs, lo=1, hi=65535),
    )


def parse_destination(raw: Any, path: str, errs: Errors) -> Destination:
    d = as_map(raw, path, errs)
    port = as_map(d.get("port"), f"{path}.port", errs)
    subset = as_str(d.get("subset"), f"{path}.subset", errs)
    if subset and not SUBSET_NAME.match(subset):
        errs.add(f"{path}.subset", f"{subset!r} is not a valid subset name")
    host = as_str(d.get("host"), f"{path}.host", errs, required=True)
    if host:
        check_host(host, f"{path}.host", errs)
    return Destination(host=host, subset=subset,
                       port=as_int(port.get("number"), f"{path}.port.number", errs, lo=1,
                                   hi=65535))


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
    (except the authority in a request set/add, see `_authority`)."""
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
    for key in sorted(set(ops) - {"set", "add", "remove"}):
        errs.add(f"{path}.{key}", "unknown field; use set, add or remove")
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


def _headers(raw: Any, path: str, errs: Errors) -> tuple[Headers, str | None]:
    h = as_map(raw, path, errs)
    for key in sorted(set(h) - {"request", "response"}):
        errs.add(f"{path}.{key}", "unknown field; use request or response")
    request, authority = _header_ops(h.get("request"), f"{path}.request", errs, request=True)
    response, _ = _header_ops(h.get("response"), f"{path}.response", errs)
    return Headers(request=request, response=response), authority


def parse_weighted(raw: Any, path: str, errs: Errors) -> tuple[WeightedDestination, ...]:
    dests = []
    for i, d in enumerate(as_list(raw, path, errs)):
        dpath = f"{path}[{i}]"
        d = as_map(d, dpath, errs)
        for key in sorted(set(d) - {"destination", "weight", "headers"}):
            errs.add(f"{dpath}.{key}", "unknown field")
        weight = as_int(d.get("weight"), f"{dpath}.weight", errs, lo=0, hi=100)
        headers, authority = _headers(d.get("headers"), f"{dpath}.headers", errs)
        if authority is not None:
            # Istio rewrites the authority per destination; the translator has no
            # per-destination rewrite yet, and Envoy refuses the header operation.
            errs.add(f"{dpath}.headers.request", "setting the authority per destination is "
                     "not supported; use the route's rewrite.authority")
        dests.append(WeightedDestination(
            destination=parse_destination(d.get("destination"), f"{dpath}.destination", errs),
            weight=weight if weight is not None else 0,
            headers=headers,
        ))
    if len(dests) == 1 and dests[0].weight == 0:
        dests[0] = WeightedDestination(dests[0].destination, 100, dests[0].headers)
    if len(dests) > 1 and sum(d.weight for d in dests) != 100:
        errs.add(path, f"weights must add up to 100, got {sum(d.weight for d in dests)}")
    return tuple(dests)


def _retries(raw: Any, path: str, errs: Errors) -> Retries:
    r = as_map(raw, path, errs)
    for key in sorted(set(r) - {"attempts", "perTryTimeout", "retryOn",
                                "retryRemoteLocalities"}):
        errs.add(f"{path}.{key}", "unknown field")
    attempts = as_int(r.get("attempts"), f"{path}.attempts", errs, lo=0, hi=1000)
    per_try = as_istio_duration(r.get("perTryTimeout"), f"{path}.perTryTimeout", errs)
    if not attempts and any(r.get(k) is not None for k in ("perTryTimeout", "retryOn",
                                                             "retryRemoteLocalities")):
        # Istio: attempts 0 (or left out) disables retries; anything more is a mistake.
        errs.add(f"{path}.attempts", "retries are configured but attempts is 0 or missing "
                 "(which disables them)")
    policies, codes = [], []
    for token in (t.strip() for t in as_str(r.get("retryOn"), f"{path}.retryOn", errs)
                  .split(",") if t.strip()):
        if token.isdigit() and 100 <= int(token) <= 599:
            codes.append(int(token))
        elif token in RETRY_POLICIES:
            policies.append(token)
        else:
            errs.add(f"{path}.retryOn", f"{token!r} is neither an Envoy retry policy nor an "
                     "HTTP status code")
    if codes and "retriable-status-codes" not in policies:
        policies.append("retriable-status-codes")
    if not r.get("retryOn"):
        return Retries(attempts=attempts if attempts is not None else 2,
                       per_try_timeout=per_try)
    return Retries(attempts=attempts if attempts is not None else 2, per_try_timeout=per_try,
                   retry_on=",".join(policies), retriable_status_codes=tuple(codes))


def _fault(raw: Any, path: str, errs: Errors) -> Fault:
    f = as_map(raw, path, errs)
    for key in sorted(set(f) - {"delay", "abort"}):
        errs.add(f"{path}.{key}", "unknown field; use delay or abort")
    delay = abort = None
    if "delay" in f:
        d = as_map(f["delay"], f"{path}.delay", errs)
        if "exponentialDelay" in d:
            errs.add(f"{path}.delay.exponentialDelay", "not supported by Istio or Envoy")
        if d.get("fixedDelay") is None:
            errs.add(f"{path}.delay.fixedDelay", "is required")
        seconds = as_istio_duration(d.get("fixedDelay"), f"{path}.delay.fixedDelay", errs)
        if "percentage" in d or "percent" not in d:
            percent = _fault_percent(d.get("percentage"), f"{path}.delay.percentage", errs)
        else:
            percent = _int_percent(d["percent"], f"{path}.delay.percent", errs, clamp=True)
        delay = FaultDelay(seconds or 0.0, percent)
    if "abort" in f:
        a = as_map(f["abort"], f"{path}.abort", errs)
        http_status = as_int(a.get("httpStatus"), f"{path}.abort.httpStatus", errs, lo=200,
                             hi=599)
        grpc = a.get("grpcStatus")
        grpc_status = None
        if grpc is not None:
            if grpc not in GRPC_STATUS:
                errs.add(f"{path}.abort.grpcStatus", f"{grpc!r} is not a gRPC status name")
            else:
                grpc_status = GRPC_STATUS[grpc]
        if "http2Error" in a:
            errs.add(f"{path}.abort.http2Error", "not supported by Envoy")
        if (http_status is None) == (grpc_status is None):
            errs.add(f"{path}.abort", "needs exactly one of httpStatus or grpcStatus")
        abort = FaultAbort(http_status, grpc_status,
                           _fault_percent(a.get("percentage"), f"{path}.abort.percentage",
                                          errs))
    if delay is None and abort is None:
        errs.add(path, "needs a delay or an abort")
    return Fault(delay, abort)


def _fault_percent(raw: Any, path: str, errs: Errors) -> float:
    """Istio: a fault's percentage is 0 or within [0.0001, 100] (Envoy's resolution)."""
    percent = parse_percent(raw, path, errs)
    if 0 < percent < 0.0001:
        errs.add(f"{path}.value", f"must be 0 or at least 0.0001, got {percent}")
    return percent


def _int_percent(raw: Any, path: str, errs: Errors, *, clamp: bool = False) -> float:
    """The deprecated integer percentages. `percent` (fault delay) is an int32 Istio
    does not range-check: past 100 it means always, below 0 never (clamped, where the
    translator would overflow). `mirrorPercent` is a uint32 Istio holds to 100."""
    lo, hi = (-(2**31), 2**31 - 1) if clamp else (0, 100)
    value = as_int(raw, path, errs, lo=lo, hi=hi)
    if value is None:
        return 100.0
    return float(min(100, max(0, value)))


def _mirrors(r: dict[str, Any], path: str, errs: Errors) -> tuple[Mirror, ...]:
    if "mirror" in r and "mirrors" in r:
        errs.add(f"{path}.mirrors", "use either mirror or mirrors, not both")
        return ()
    if "mirror" in r:
        if "mirrorPercentage" in r or "mirrorPercent" not in r:
            percent = parse_percent(r.get("mirrorPercentage"), f"{path}.mirrorPercentage",
                                    errs)
        else:
            percent = _int_percent(r["mirrorPercent"], f"{path}.mirrorPercent", errs)
        return (Mirror(parse_destination(r["mirror"], f"{path}.mirror", errs), percent),)
    out = []
    for i, m in enumerate(as_list(r.get("mirrors"), f"{path}.mirrors", errs)):
        m = as_map(m, f"{path}.mirrors[{i}]", errs)
        out.append(Mirror(parse_destination(m.get("destination"),
                                            f"{path}.mirrors[{i}].destination", errs),
                          parse_percent(m.get("percentage"), f"{path}.mirrors[{i}].percentage",
                                        errs)))
    return tuple(out)


def _rewrite(raw: Any, path: str, errs: Errors) -> Rewrite:
    r = as_map(raw, path, errs)
    for key in sorted(set(r) - {"uri", "authority", "uriRegexRewrite"}):
        errs.add(f"{path}.{key}", "unknown field")
    uri_regex = None
    if "uriRegexRewrite" in r:
        rr = as_map(r["uriRegexRewrite"], f"{path}.uriRegexRewrite", errs)
        pattern = as_str(rr.get("match"), f"{path}.uriRegexRewrite.match", errs, required=True)
        check_regex(pattern, f"{path}.uriRegexRewrite.match", errs)
        uri_regex = (pattern, as_str(rr.get("rewrite"), f"{path}.uriRegexRewrite.rewrite",
                                     errs))
        if "uri" in r:
            errs.add(f"{path}.uriRegexRewrite", "use either uri or uriRegexRewrite, not both")
    uri = as_str(r["uri"], f"{path}.uri", errs) if "uri" in r else None
    authority = as_str(r["authority"], f"{path}.authority", errs) if "authority" in r else None
    if uri is None and authority is None and uri_regex is None:
        errs.add(path, "needs uri, authority or uriRegexRewrite")
    return Rewrite(uri, authority, uri_regex)


def _redirect(raw: Any, path: str, errs: Errors) -> Redirect:
    r = as_map(raw, path, errs)
    for key in sorted(set(r) - {"uri", "authority", "port", "derivePort", "scheme",
                                "redirectCode"}):
        errs.add(f"{path}.{key}", "unknown field")
    code = as_int(r.get("redirectCode"), f"{path}.redirectCode", errs)
    if code is not None and code not in REDIRECT_CODES:
        errs.add(f"{path}.redirectCode", f"must be one of {REDIRECT_CODES}, got {code}")
    scheme = as_str(r.get("scheme"), f"{path}.scheme", errs)
    if scheme and scheme not in ("http", "https"):
        errs.add(f"{path}.scheme", f"must be http or https, got {scheme!r}")
    if r.get("derivePort") not in (None, "FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"):
        errs.add(f"{path}.derivePort", "must be FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT")
    return Redirect(uri=as_str(r.get("uri"), f"{path}.uri", errs),
                    authority=as_str(r.get("authority"), f"{path}.authority", errs),
                    port=as_int(r.get("port"), f"{path}.port", errs, lo=1, hi=65535),
                    scheme=scheme, code=code if code in REDIRECT_CODES else 301)


def _direct_response(raw: Any, path: str, errs: Errors) -> DirectResponse:
    d = as_map(raw, path, errs)
    status = as_int(d.get("status"), f"{path}.status", errs, lo=200, hi=599, required=True)
    body_raw = as_map(d.get("body"), f"{path}.body", errs)
    body = None
    if "string" in body_raw:
        body = as_str(body_raw["string"], f"{path}.body.string", errs).encode()
    elif "bytes" in body_raw:
        try:
            body = base64.b64decode(as_str(body_raw["bytes"], f"{path}.body.bytes", errs),
                                    validate=True)
        except (binascii.Error, ValueError):
            errs.add(f"{path}.body.bytes", "must be base64")
    elif body_raw:
        errs.add(f"{path}.body", "needs string or bytes")
    return DirectResponse(status or 200, body)


def _cors(raw: Any, path: str, errs: Errors) -> CorsPolicy:
    c = as_map(raw, path, errs)
    known = {"allowOrigins", "allowOrigin", "allowMethods", "allowHeaders", "exposeHeaders",
             "maxAge", "allowCredentials", "unmatchedPreflights"}
    for key in sorted(set(c) - known):
        errs.add(f"{path}.{key}", "unknown field")
    origins = [parse_string_match(o, f"{path}.allowOrigins[{i}]", errs)
               for i, o in enumerate(as_list(c.get("allowOrigins"), f"{path}.allowOrigins",
                                             errs))]
    # The deprecated allowOrigin: exact origins.
    origins += [StringMatch("exact", as_str(o, f"{path}.allowOrigin[{i}]", errs))
                for i, o in enumerate(as_list(c.get("allowOrigin"), f"{path}.allowOrigin",
                                              errs))]

    def names(key: str) -> tuple[str, ...]:
        return tuple(as_str(v, f"{path}.{key}[{i}]", errs)
                     for i, v in enumerate(as_list(c.get(key), f"{path}.{key}", errs)))
    max_age = as_istio_duration(c.get("maxAge"), f"{path}.maxAge", errs)
    if max_age is not None and max_age != int(max_age):
        errs.add(f"{path}.maxAge", "must be a whole number of seconds (Access-Control-Max-Age)")
    return CorsPolicy(
        allow_origins=tuple(o for o in origins if o is not None),
        allow_methods=names("allowMethods"), allow_headers=names("allowHeaders"),
        expose_headers=names("exposeHeaders"), max_age=max_age,
        allow_credentials=as_bool(c["allowCredentials"], f"{path}.allowCredentials", errs)
        if "allowCredentials" in c else None)


_HTTP_ROUTE_FIELDS = {"name", "match", "route", "timeout", "retries", "fault", "mirror",
                      "mirrors", "mirrorPercentage", "mirrorPercent", "rewrite", "redirect",
                      "directResponse", "headers", "corsPolicy", "delegate"}


def _parse_http_route(raw: Any, path: str, errs: Errors, warnings: list[str]
                      ) -> HTTPRoute | None:
    r = as_map(raw, path, errs)
    for key in sorted(set(r) - _HTTP_ROUTE_FIELDS):
        errs.add(f"{path}.{key}", "unknown field")
    if "delegate" in r:
        warnings.append(f"{path}.delegate: delegation is for gateways; this route is ignored")
        return None
    actions = [k for k in ("route", "redirect", "directResponse") if k in r]
    if len(actions) != 1:
        errs.add(path, "needs exactly one of route, redirect or directResponse"
                 + (f", got {', '.join(actions)}" if actions else ""))
    if "rewrite" in r and "redirect" in r:
        errs.add(f"{path}.rewrite", "cannot be used with redirect")
    dests = parse_weighted(r.get("route"), f"{path}.route", errs)
    if "route" in r and not dests:
        errs.add(f"{path}.route", "needs at least one destination")
    timeout = as_istio_duration(r.get("timeout"), f"{path}.timeout", errs)
    headers, authority = _headers(r.get("headers"), f"{path}.headers", errs)
    rewrite = _rewrite(r["rewrite"], f"{path}.rewrite", errs) if "rewrite" in r else None
    if authority is not None:
        if rewrite is not None and rewrite.authority:
            errs.add(f"{path}.headers.request", "the authority is set here and in "
                     "rewrite.authority; set it once")
        elif "route" in r:  # Istio's translation: the header set becomes the rewrite
            rewrite = replace(rewrite or Rewrite(), authority=authority)
    return HTTPRoute(
        name=as_str(r.get("name"), f"{path}.name", errs),
        matches=tuple(_parse_match(m, f"{path}.match[{i}]", errs, warnings)
                      for i, m in enumerate(as_list(r.get("match"), f"{path}.match", errs))),
        route=dests,
        timeout=timeout,
        retries=_retries(r["retries"], f"{path}.retries", errs) if "retries" in r else None,
        fault=_fault(r["fault"], f"{path}.fault", errs) if "fault" in r else None,
        mirrors=_mirrors(r, path, errs),
        rewrite=rewrite,
        redirect=_redirect(r["redirect"], f"{path}.redirect", errs) if "redirect" in r
        else None,
        direct_response=_direct_response(r["directResponse"], f"{path}.directResponse", errs)
        if "directResponse" in r else None,
        headers=headers,
        cors=_cors(r["corsPolicy"], f"{path}.corsPolicy", errs) if "corsPolicy" in r else None,
    )


def _parse_tcp_route(raw: Any, path: str, errs: Errors, warnings: list[str]) -> TCPRoute:
    r = as_map(raw, path, errs)
    for key in sorted(set(r) - {"match", "route"}):
        errs.add(f"{path}.{key}", "unknown field")
    ports = []
    for i, m in enumerate(as_list(r.get("match"), f"{path}.match", errs)):
        m = as_map(m, f"{path}.match[{i}]", errs)
        for key in sorted(set(m) - {"port"}):
            warnings.append(f"{path}.match[{i}].{key}: not supported, the match ignores it")
        port = as_int(m.get("port"), f"{path}.match[{i}].port", errs, lo=1, hi=65535)
        if port is not None:
            ports.append(port)
    dests = parse_weighted(r.get("route"), f"{path}.route", errs)
    if not dests:
        errs.add(f"{path}.route", "needs at least one destination")
    return TCPRoute(tuple(ports), dests)


def parse_virtual_service(raw: dict[str, Any], errs: Errors) -> VirtualService:
    meta = parse_meta(raw, errs)
    spec = as_map(raw.get("spec"), "spec", errs)
    warnings: list[str] = []
    for key in sorted(set(spec) - {"hosts", "gateways", "http", "tcp", "tls", "exportTo"}):
        errs.add(f"spec.{key}", "unknown field")
    hosts = tuple(as_str(h, f"spec.hosts[{i}]", errs)
                  for i, h in enumerate(as_list(spec.get("hosts"), "spec.hosts", errs)))
    if not hosts:
        errs.add("spec.hosts", "needs at least one host")
    for i, h in enumerate(hosts):
        check_host(h, f"spec.hosts[{i}]", errs)
    if "tls" in spec:
        warnings.append("spec.tls: TLS routing is not supported; ignored")
    http = [_parse_http_route(r, f"spec.http[{i}]", errs, warnings)
            for i, r in enumerate(as_list(spec.get("http"), "spec.http", errs))]
    tcp = tuple(_parse_tcp_route(r, f"spec.tcp[{i}]", errs, warnings)
                for i, r in enumerate(as_list(spec.get("tcp"), "spec.tcp", errs)))
    return VirtualService(
        meta=meta,
        hosts=hosts,
        gateways=tuple(str(g) for g in as_list(spec.get("gateways"), "spec.gateways", errs)),
        http=tuple(r for r in http if r is not None),
        tcp=tcp,
        warnings=tuple(warnings),
    )
