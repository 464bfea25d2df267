"""Reading what an HTTP route does to a request besides choosing its destinations:
retries, fault injection, rewrite, redirect, direct response and CORS. Checked as Istio
checks them (retryOn tokens, gRPC status names, redirect codes, whole-millisecond
durations...), so Envoy never receives a value it would refuse.
"""

from __future__ import annotations

import base64
import binascii
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


def parse_retries(raw: Any, path: str, errs: Errors) -> Retries:
    r = as_map(raw, path, errs)
    reject_unknown_fields(r, {"attempts", "perTryTimeout", "retryOn", "retryRemoteLocalities"},
                          path, errs)
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


def parse_fault(raw: Any, path: str, errs: Errors) -> Fault:
    f = as_map(raw, path, errs)
    reject_unknown_fields(f, {"delay", "abort"}, path, errs, hint="use delay or abort")
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
            percent = int_percent(d["percent"], f"{path}.delay.percent", errs, clamp=True)
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


def parse_redirect(raw: Any, path: str, errs: Errors) -> Redirect:
    r = as_map(raw, path, errs)
    reject_unknown_fields(r, {"uri", "authority", "port", "derivePort", "scheme",
                              "redirectCode"}, path, errs)
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


def parse_direct_response(raw: Any, path: str, errs: Errors) -> DirectResponse:
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


def parse_cors(raw: Any, path: str, errs: Errors) -> CorsPolicy:
    c = as_map(raw, path, errs)
    known = {"allowOrigins", "allowOrigin", "allowMethods", "allowHeaders", "exposeHeaders",
             "maxAge", "allowCredentials", "unmatchedPreflights"}
    reject_unknown_fields(c, known, path, errs)
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
