"""Reading what an HTTP route does to a request besides choosing its destinations:
retries, fault injection, rewrite, redirect, direct response and CORS. Checked as Istio
checks them (retryOn tokens, gRPC status names, redirect codes, whole-millisecond
durations...), so Envoy never receives a value it would refuse.
"""

from __future__ import annotations

import base64
import binascii
from http import HTTPStatus
from typing import Any

from controlplane.model.errors import Errors
from controlplane.model.fields import (
    as_bool,
    as_int,
    as_istio_duration,
    as_list,
    as_map,
    as_str,
    reject_unknown_fields,
)
from controlplane.model.istio_common import (
    StringMatch,
    check_header_name,
    check_regex,
    parse_percent,
    parse_string_match,
)
from controlplane.model.virtual_service import (
    CorsPolicy,
    DirectResponse,
    Fault,
    FaultAbort,
    FaultDelay,
    HTTPMatch,
    Redirect,
    Retries,
    Rewrite,
)

# Envoy's retry_on policies (router filter, x-envoy-retry-on and x-envoy-retry-grpc-on).
RETRY_POLICIES = frozenset({
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
    "envoy-ratelimited", "retriable-4xx", "refused-stream", "retriable-status-codes",
    "retriable-headers", "http3-post-connect-failure", "cancelled", "deadline-exceeded",
    "internal", "resource-exhausted", "unavailable",
})
GRPC_STATUS = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}
REDIRECT_CODES = (301, 302, 303, 307, 308)


def _retry_on_token(token: str) -> bool:
    """Istio's rule: an Envoy retry policy or a status code Go's net/http names."""
    if token in RETRY_POLICIES:
        return True
    if not token.isdigit():
        return False
    try:
        HTTPStatus(int(token))
    except ValueError:
        return False
    return True


def parse_retries(raw: Any, path: str, errs: Errors, warnings: list[str]) -> Retries:
    r = as_map(raw, path, errs)
    reject_unknown_fields(r, {"attempts", "perTryTimeout", "retryOn", "retryRemoteLocalities",
                              "retryIgnorePreviousHosts", "backoff"}, path, errs)
    attempts = as_int(r.get("attempts"), f"{path}.attempts", errs, lo=0, hi=1000)
    per_try = as_istio_duration(r.get("perTryTimeout"), f"{path}.perTryTimeout", errs)
    backoff = as_istio_duration(r.get("backoff"), f"{path}.backoff", errs)
    if not attempts and any(r.get(k) is not None for k in ("perTryTimeout", "retryOn",
                                                             "retryRemoteLocalities")):
        # Istio: attempts 0 (or left out) disables retries; anything more is a mistake.
        errs.add(f"{path}.attempts", "retries are configured but attempts is 0 or missing "
                 "(which disables them)")
    for key in ("retryRemoteLocalities", "retryIgnorePreviousHosts"):
        if key in r:
            warnings.append(f"{path}.{key}: not supported; ignored")
    policies, codes = [], []
    retry_on = as_str(r.get("retryOn"), f"{path}.retryOn", errs)
    # Split on commas only, as Istio does: " 5xx" (with its space) is not a policy.
    for token in retry_on.split(",") if retry_on else ():
        if not _retry_on_token(token):
            errs.add(f"{path}.retryOn", f"{token!r} is neither an Envoy retry policy nor an "
                     "HTTP status code")
        elif token.isdigit():
            codes.append(int(token))
        elif token not in policies:
            policies.append(token)
    if codes and "retriable-status-codes" not in policies:
        policies.append("retriable-status-codes")
    count = attempts if attempts is not None else 2
    if not retry_on:
        return Retries(attempts=count, per_try_timeout=per_try, backoff=backoff)
    return Retries(attempts=count, per_try_timeout=per_try, retry_on=",".join(policies),
                   retriable_status_codes=tuple(codes), backoff=backoff)


def parse_fault(raw: Any, path: str, errs: Errors, warnings: list[str]) -> Fault | None:
    """A fault, or None when nothing of it can be injected: Istio accepts a delay without
    a fixedDelay and an abort without a status (with a warning) and drops them."""
    f = as_map(raw, path, errs)
    reject_unknown_fields(f, {"delay", "abort"}, path, errs, hint="use delay or abort")
    if f.get("delay") is None and f.get("abort") is None:
        errs.add(path, "needs a delay or an abort")
    delay = abort = None
    if f.get("delay") is not None:
        d = as_map(f["delay"], f"{path}.delay", errs)
        reject_unknown_fields(d, {"fixedDelay", "exponentialDelay", "percentage", "percent"},
                              f"{path}.delay", errs)
        if "exponentialDelay" in d:
            as_istio_duration(d["exponentialDelay"], f"{path}.delay.exponentialDelay", errs)
            errs.add(f"{path}.delay.exponentialDelay", "not supported by Istio or Envoy")
        seconds = as_istio_duration(d.get("fixedDelay"), f"{path}.delay.fixedDelay", errs)
        if "percentage" in d or "percent" not in d:
            percent = _fault_percent(d.get("percentage"), f"{path}.delay.percentage", errs)
        else:
            percent = int_percent(d["percent"], f"{path}.delay.percent", errs, clamp=True)
        if d.get("fixedDelay") is None:
            if "exponentialDelay" not in d:
                warnings.append(f"{path}.delay: no fixedDelay; the delay is not injected")
        elif seconds is not None:
            delay = FaultDelay(seconds, percent)
    if f.get("abort") is not None:
        a = as_map(f["abort"], f"{path}.abort", errs)
        reject_unknown_fields(a, {"httpStatus", "grpcStatus", "http2Error", "percentage"},
                              f"{path}.abort", errs)
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
            errs.add(f"{path}.abort.http2Error", "not supported by Istio or Envoy")
        kinds = [k for k in ("httpStatus", "grpcStatus", "http2Error") if k in a]
        if len(kinds) > 1:
            errs.add(f"{path}.abort", f"use one of httpStatus, grpcStatus or http2Error, "
                     f"got {', '.join(kinds)}")
        percent = _fault_percent(a.get("percentage"), f"{path}.abort.percentage", errs)
        if not kinds:
            warnings.append(f"{path}.abort: no httpStatus or grpcStatus; the abort is not "
                            "injected")
        elif http_status is not None or grpc_status is not None:
            abort = FaultAbort(http_status, grpc_status, percent)
    return Fault(delay, abort) if delay is not None or abort is not None else None


def _fault_percent(raw: Any, path: str, errs: Errors) -> float:
    """Istio: a fault's percentage is 0 or within [0.0001, 100] (Envoy's resolution)."""
    percent = parse_percent(raw, path, errs)
    if 0 < percent < 0.0001:
        errs.add(f"{path}.value", f"must be 0 or at least 0.0001, got {percent}")
    return percent


def int_percent(raw: Any, path: str, errs: Errors, *, clamp: bool = False) -> float:
    """The deprecated integer percentages. `percent` (fault delay) is an int32 Istio
    does not range-check: past 100 it means always, below 0 never (clamped, where the
    translator would overflow). `mirrorPercent` is a uint32 Istio holds to 100."""
    lo, hi = (-(2**31), 2**31 - 1) if clamp else (0, 100)
    value = as_int(raw, path, errs, lo=lo, hi=hi)
    if value is None:
        return 100.0
    return float(min(100, max(0, value)))


def parse_rewrite(raw: Any, path: str, errs: Errors) -> Rewrite:
    r = as_map(raw, path, errs)
    reject_unknown_fields(r, {"uri", "authority", "uriRegexRewrite"}, path, errs)
    uri_regex = None
    if "uriRegexRewrite" in r:
        rr = as_map(r["uriRegexRewrite"], f"{path}.uriRegexRewrite", errs)
        reject_unknown_fields(rr, {"match", "rewrite"}, f"{path}.uriRegexRewrite", errs)
        pattern = as_str(rr.get("match"), f"{path}.uriRegexRewrite.match", errs, required=True)
        if pattern:
            check_regex(pattern, f"{path}.uriRegexRewrite.match", errs)
        uri_regex = (pattern, as_str(rr.get("rewrite"), f"{path}.uriRegexRewrite.rewrite",
                                     errs, required=True))
        if r.get("uri"):
            errs.add(f"{path}.uriRegexRewrite", "use either uri or uriRegexRewrite, not both")
    # An empty string is the proto's "unset", as in Istio.
    uri = as_str(r.get("uri"), f"{path}.uri", errs) or None
    authority = as_str(r.get("authority"), f"{path}.authority", errs) or None
    if uri is None and authority is None and uri_regex is None:
        errs.add(path, "needs uri, authority or uriRegexRewrite")
    return Rewrite(uri, authority, uri_regex)


def parse_redirect(raw: Any, path: str, errs: Errors, matches: tuple[HTTPMatch, ...] = ()
                   ) -> Redirect:
    r = as_map(raw, path, errs)
    reject_unknown_fields(r, {"uri", "authority", "port", "derivePort", "scheme",
                              "redirectCode", "prefixRewrite"}, path, errs)
    uri = as_str(r.get("uri"), f"{path}.uri", errs)
    prefix = as_str(r.get("prefixRewrite"), f"{path}.prefixRewrite", errs)
    if uri and prefix:
        errs.add(f"{path}.prefixRewrite", "use either uri or prefixRewrite, not both")
    if prefix and any(m.uri is not None and m.uri.kind != "prefix" for m in matches):
        # Envoy replaces the matched prefix: there must be one.
        errs.add(f"{path}.prefixRewrite", "needs every URI match of the route to be a prefix "
                 "match")
    authority = as_str(r.get("authority"), f"{path}.authority", errs)
    scheme = as_str(r.get("scheme"), f"{path}.scheme", errs)
    if "port" in r and "derivePort" in r:
        errs.add(f"{path}.derivePort", "use either port or derivePort, not both")
    if not (uri or prefix or authority or scheme or "port" in r or "derivePort" in r):
        errs.add(path, "needs uri, prefixRewrite, authority, scheme or a port")
    code = as_int(r.get("redirectCode"), f"{path}.redirectCode", errs)
    if code and code not in REDIRECT_CODES:
        # Istio accepts any 3xx, then drops the route when it is not one of these.
        errs.add(f"{path}.redirectCode", f"must be one of {REDIRECT_CODES}, got {code}")
    if scheme and scheme not in ("http", "https"):
        errs.add(f"{path}.scheme", f"must be http or https, got {scheme!r}")
    if r.get("derivePort") not in (None, "FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"):
        errs.add(f"{path}.derivePort", "must be FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT")
    port = as_int(r.get("port"), f"{path}.port", errs, lo=0, hi=65535)
    return Redirect(uri=uri, authority=authority, port=port or None, scheme=scheme,
                    code=code if code in REDIRECT_CODES else 301, prefix_rewrite=prefix,
                    port_from_request=r.get("derivePort") == "FROM_REQUEST_PORT")


# Istio's limits on a direct response's body: larger ones slow every push.
_BODY_WARN, _BODY_MAX = 100 * 1024, 1024 * 1024


def parse_direct_response(raw: Any, path: str, errs: Errors, warnings: list[str]
                          ) -> DirectResponse:
    d = as_map(raw, path, errs)
    reject_unknown_fields(d, {"status", "body"}, path, errs)
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
    if body is not None and len(body) > _BODY_MAX:
        errs.add(f"{path}.body", f"is {len(body)} bytes; at most 1 MiB")
    elif body is not None and len(body) > _BODY_WARN:
        warnings.append(f"{path}.body: over 100 KiB; large bodies slow every push")
    return DirectResponse(status or 200, body)


_CORS_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT",
                           "OPTIONS", "TRACE", "*"})


def parse_cors(raw: Any, path: str, errs: Errors) -> CorsPolicy:
    c = as_map(raw, path, errs)
    known = {"allowOrigins", "allowOrigin", "allowMethods", "allowHeaders", "exposeHeaders",
             "maxAge", "allowCredentials", "unmatchedPreflights"}
    reject_unknown_fields(c, known, path, errs)
    origins = []
    for i, o in enumerate(as_list(c.get("allowOrigins"), f"{path}.allowOrigins", errs)):
        opath = f"{path}.allowOrigins[{i}]"
        origin = parse_string_match(o, opath, errs, empty_prefix_ok=True)
        if origin is not None and not origin.value and origin.kind != "regex":
            errs.add(f"{opath}.{origin.kind}", "must not be empty")
        origins.append(origin)
    # The deprecated allowOrigin: exact origins.
    origins += [StringMatch("exact", as_str(o, f"{path}.allowOrigin[{i}]", errs))
                for i, o in enumerate(as_list(c.get("allowOrigin"), f"{path}.allowOrigin",
                                              errs))]

    def names(key: str) -> tuple[str, ...]:
        return tuple(as_str(v, f"{path}.{key}[{i}]", errs)
                     for i, v in enumerate(as_list(c.get(key), f"{path}.{key}", errs)))
    methods = names("allowMethods")
    for i, method in enumerate(methods):
        if method not in _CORS_METHODS:
            errs.add(f"{path}.allowMethods[{i}]", f"{method!r} is not an HTTP method "
                     f"({', '.join(sorted(_CORS_METHODS))})")
    headers = {key: names(key) for key in ("allowHeaders", "exposeHeaders")}
    for key, values in headers.items():
        for i, name in enumerate(values):
            if name != "*":
                check_header_name(name, f"{path}.{key}[{i}]", errs)
    max_age = as_istio_duration(c.get("maxAge"), f"{path}.maxAge", errs)
    if max_age is not None and max_age != int(max_age):
        errs.add(f"{path}.maxAge", "must be a whole number of seconds (Access-Control-Max-Age)")
    return CorsPolicy(
        allow_origins=tuple(o for o in origins if o is not None),
        allow_methods=methods, allow_headers=headers["allowHeaders"],
        expose_headers=headers["exposeHeaders"], max_age=max_age,
        allow_credentials=as_bool(c["allowCredentials"], f"{path}.allowCredentials", errs)
        if "allowCredentials" in c else None)
