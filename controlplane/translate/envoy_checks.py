"""What Envoy refuses in code, beyond the PGV rules of its protos: one function per message
type, registered in CHECKS by full name, which `constraints.check` runs as it walks a
resource. Each says which Envoy behaviour it mirrors; the limits were confirmed against
the Envoy the tests run (1.40, `envoy --mode validate`), see tests/test_constraints.py.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2

from controlplane.model.re2check import ENVOY_MAX_PROGRAM_SIZE, regex_error
from controlplane.translate.violations import IPV4, Out, Violation, join, short

CHECKS: dict[str, Callable[[Any, str, Out], None]] = {}
# Checks of a sub-message where a given type holds it: holder type -> [(the field names
# down to it, the check, given the sub-message and its path)]. The check runs when each
# field on the way is set; the compiled walker runs it where it already holds the
# sub-message instead of reading the way down again.
CHECKS_AT: dict[str, list[tuple[tuple[str, ...], Callable[[Any, str, Out], None]]]] = {}


def _register(*names: str) -> Callable[[Callable[[Any, str, Out], None]],
                                       Callable[[Any, str, Out], None]]:
    def add(fn: Callable[[Any, str, Out], None]) -> Callable[[Any, str, Out], None]:
        for name in names:
            CHECKS[name] = fn
        return fn
    return add


def _register_at(holder: str, *hops: str
                 ) -> Callable[[Callable[[Any, str, Out], None]],
                               Callable[[Any, str, Out], None]]:
    def add(fn: Callable[[Any, str, Out], None]) -> Callable[[Any, str, Out], None]:
        CHECKS_AT.setdefault(holder, []).append((hops, fn))
        return fn
    return add


# -- regexes -----------------------------------------------------------------------------

@_register("envoy.type.matcher.v3.RegexMatcher", "xds.type.matcher.v3.RegexMatcher")
def regex_matcher(m: Any, path: str, out: Out) -> None:
    """source/common/common/regex.cc (CompiledGoogleReMatcher): the pattern must compile
    with RE2 and its program may not exceed `re2.max_program_size.error_level` (100), or
    the deprecated google_re2.max_program_size when that is set. Every safe_regex and
    regex_rewrite pattern is a RegexMatcher, so this covers all of them."""
    if not m.regex:
        return  # PGV's min_len already reports it
    limit = ENVOY_MAX_PROGRAM_SIZE
    if m.HasField("google_re2") and m.google_re2.HasField("max_program_size"):
        limit = m.google_re2.max_program_size.value
    problem = regex_error(m.regex, limit)
    if problem is not None:
        out.append(Violation(join(path, "regex"), problem))


# -- durations ---------------------------------------------------------------------------

# Envoy converts every Duration of a config to an int64 of nanoseconds
# (source/common/protobuf/utility.cc, validateDuration): negative values are refused
# ("Expected positive duration") and so are seconds past what fits (measured on 1.40:
# 9223372035 s accepted, 9223372036 s refused as "Duration out-of-range").
ENVOY_DURATION_MAX_SECONDS = 9_223_372_035


@_register("google.protobuf.Duration")
def duration(d: Any, path: str, out: Out) -> None:
    if d.seconds < 0 or d.nanos < 0:
        out.append(Violation(path, f"Envoy refuses negative durations, got {d.seconds}s "
                             f"{d.nanos}ns"))
    elif d.seconds > ENVOY_DURATION_MAX_SECONDS:
        out.append(Violation(path, f"duration of {d.seconds}s is over Envoy's maximum of "
                             f"{ENVOY_DURATION_MAX_SECONDS}s"))


# When this holds the check reports nothing: the compiled walker tests it inline and calls
# the check only otherwise (see `_fast` in constraints/rules.py; tests/test_constraints.py
# holds each guard to its check).
duration.fast = ("0 <= {v}.seconds <= {s} and {v}.nanos >= 0",  # type: ignore[attr-defined]
                 {"s": ENVOY_DURATION_MAX_SECONDS})


# -- headers -----------------------------------------------------------------------------

# The substitution format parser (source/common/formatter/substitution_formatter.cc,
# SubstitutionFormatParser::parse) that header_parser.cc runs on every header value:
# `%%` is a literal percent; any other `%` must start `%COMMAND(args):length%`.
def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_COMMAND = re.compile(r"%([A-Z0-9_]+)(?:\(([^)]*)\))?(?::([0-9]+))?%")
# Command operators Envoy 1.40 accepts in a header value, by syntax (each was tried
# against the binary: no parameters or length allowed / parameters optional / required).
_COMMAND_ONLY = _words("""
ACCESS_LOG_TYPE BYTES_RECEIVED BYTES_RETRANSMITTED BYTES_SENT CONNECTION_ID
CONNECTION_TERMINATION_DETAILS CUSTOM_FLAGS DOWNSTREAM_DETECTED_CLOSE_TYPE
DOWNSTREAM_DIRECT_LOCAL_ADDRESS DOWNSTREAM_DIRECT_LOCAL_PORT DOWNSTREAM_DIRECT_REMOTE_ADDRESS
DOWNSTREAM_DIRECT_REMOTE_PORT DOWNSTREAM_HANDSHAKE_DURATION DOWNSTREAM_HEADER_BYTES_RECEIVED
DOWNSTREAM_HEADER_BYTES_SENT DOWNSTREAM_LOCAL_ADDRESS DOWNSTREAM_LOCAL_ADDRESS_ENDPOINT_ID
DOWNSTREAM_LOCAL_DNS_SAN DOWNSTREAM_LOCAL_EMAIL_SAN DOWNSTREAM_LOCAL_IP_SAN
DOWNSTREAM_LOCAL_OTHERNAME_SAN DOWNSTREAM_LOCAL_PORT DOWNSTREAM_LOCAL_SUBJECT
DOWNSTREAM_LOCAL_URI_SAN DOWNSTREAM_PEER_CERT DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_1
DOWNSTREAM_PEER_CHAIN_FINGERPRINTS_256 DOWNSTREAM_PEER_CHAIN_SERIALS DOWNSTREAM_PEER_DNS_SAN
DOWNSTREAM_PEER_EMAIL_SAN DOWNSTREAM_PEER_FINGERPRINT_1 DOWNSTREAM_PEER_FINGERPRINT_256
DOWNSTREAM_PEER_IP_SAN DOWNSTREAM_PEER_ISSUER DOWNSTREAM_PEER_OTHERNAME_SAN
DOWNSTREAM_PEER_SERIAL DOWNSTREAM_PEER_SUBJECT DOWNSTREAM_PEER_URI_SAN
DOWNSTREAM_REMOTE_ADDRESS DOWNSTREAM_REMOTE_PORT DOWNSTREAM_TLS_CIPHER
DOWNSTREAM_TLS_SESSION_ID DOWNSTREAM_TLS_VERSION DOWNSTREAM_TRANSPORT_FAILURE_REASON
DOWNSTREAM_WIRE_BYTES_RECEIVED DOWNSTREAM_WIRE_BYTES_SENT DURATION FILTER_CHAIN_NAME
GRPC_STATUS GRPC_STATUS_NUMBER HOSTNAME LISTENER_NAME LOCAL_REPLY_BODY PACKETS_RETRANSMITTED
PATH PROTOCOL REQUESTED_SERVER_NAME REQUEST_DURATION REQUEST_HEADERS_BYTES REQUEST_TX_DURATION
RESPONSE_CODE RESPONSE_DURATION RESPONSE_FLAGS RESPONSE_FLAGS_LONG RESPONSE_HEADERS_BYTES
RESPONSE_TRAILERS_BYTES RESPONSE_TX_DURATION ROUNDTRIP_DURATION ROUTE_NAME SPAN_ID STREAM_ID
TRACE_ID UNIQUE_ID UPSTREAM_CLUSTER UPSTREAM_CLUSTER_RAW UPSTREAM_CONNECTION_ID
UPSTREAM_CONNECTION_POOL_READY_DURATION UPSTREAM_DETECTED_CLOSE_TYPE
UPSTREAM_HEADER_BYTES_RECEIVED UPSTREAM_HEADER_BYTES_SENT UPSTREAM_HOST UPSTREAM_HOST_NAME
UPSTREAM_HOST_NAME_WITHOUT_PORT UPSTREAM_LOCAL_ADDRESS UPSTREAM_LOCAL_CLOSE_REASON
UPSTREAM_LOCAL_DNS_SAN UPSTREAM_LOCAL_IP_SAN UPSTREAM_LOCAL_PORT UPSTREAM_LOCAL_URI_SAN
UPSTREAM_PEER_CERT UPSTREAM_PEER_DNS_SAN UPSTREAM_PEER_IP_SAN UPSTREAM_PEER_ISSUER
UPSTREAM_PEER_SUBJECT UPSTREAM_PEER_URI_SAN UPSTREAM_PROTOCOL UPSTREAM_REMOTE_ADDRESS
UPSTREAM_REMOTE_ADDRESS_ENDPOINT_ID UPSTREAM_REMOTE_PORT UPSTREAM_REQUEST_ATTEMPT_COUNT
UPSTREAM_TLS_CIPHER UPSTREAM_TLS_SESSION_ID UPSTREAM_TLS_VERSION
UPSTREAM_TRANSPORT_FAILURE_REASON UPSTREAM_WIRE_BYTES_RECEIVED UPSTREAM_WIRE_BYTES_SENT
VIRTUAL_CLUSTER_NAME
""")
_PARAMS_OPTIONAL = _words("""
START_TIME START_TIME_LOCAL EMIT_TIME RESPONSE_CODE_DETAILS
DOWNSTREAM_DIRECT_LOCAL_ADDRESS_WITHOUT_PORT DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT
DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT
DOWNSTREAM_PEER_CERT_V_START DOWNSTREAM_PEER_CERT_V_END UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT
UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT UPSTREAM_PEER_CERT_V_START UPSTREAM_PEER_CERT_V_END
""")
_PARAMS_REQUIRED = _words("""
REQ RESP TRAILER REQUEST_HEADER RESPONSE_HEADER RESPONSE_TRAILER QUERY_PARAM
DYNAMIC_METADATA CLUSTER_METADATA UPSTREAM_METADATA FILTER_STATE UPSTREAM_FILTER_STATE
PER_REQUEST_STATE ENVIRONMENT CEL COALESCE COMMON_DURATION METADATA
""")
_HEADER_COMMANDS = frozenset({"REQ", "RESP", "TRAILER"})


@functools.lru_cache(maxsize=4096)
def format_error(value: str) -> str | None:
    """Why Envoy's substitution format parser rejects header value `value`, or None."""
    pos = 0
    while (i := value.find("%", pos)) != -1:
        if value.startswith("%%", i):
            pos = i + 2
            continue
        m = _COMMAND.match(value, i)
        if m is None:
            return (f"'%' at position {i} of {short(value)} starts no %COMMAND% "
                    "(write %% for a literal percent)")
        name, args, length = m.groups()
        if name in _COMMAND_ONLY:
            if args is not None or length is not None:
                return f"%{name}% takes no parameters or length, in {short(value)}"
        elif name in _PARAMS_REQUIRED:
            if not args:
                return f"%{name}(...)% requires parameters, in {short(value)}"
            if name in _HEADER_COMMANDS and args.count("?") > 1:
                return f"%{name}(...)% allows one alternative header, in {short(value)}"
        elif name not in _PARAMS_OPTIONAL:
            return f"unknown command operator %{name}% in {short(value)}"
        pos = m.end()
    return None


def _protected(name: str) -> bool:
    # source/common/router/header_parser.cc: ":-prefixed or host headers may not be
    # modified/removed" (case-insensitive: "Host" is refused too).
    return name.startswith(":") or name.lower() == "host"


def _header_options(owner: Any, path: str, out: Out) -> None:
    """request/response_headers_to_add and _to_remove, as HeaderParser::configure takes
    them for a route configuration, virtual host, route or weighted cluster."""
    for field in ("request_headers_to_add", "response_headers_to_add"):
        for i, option in enumerate(getattr(owner, field)):
            at = f"{join(path, field)}[{i}].header"
            key = option.header.key
            if _protected(key):
                out.append(Violation(f"{at}.key", f"Envoy refuses to set {short(key)}: "
                                     ":-prefixed or host headers may not be modified"))
            value = option.header.value
            if "%" in value:
                problem = format_error(value)
                if problem is not None:
                    out.append(Violation(f"{at}.value", problem))
    for field in ("request_headers_to_remove", "response_headers_to_remove"):
        for i, name in enumerate(getattr(owner, field)):
            if _protected(name):
                out.append(Violation(f"{join(path, field)}[{i}]",
                                     f"Envoy refuses to remove {short(name)}: :-prefixed or "
                                     "host headers may not be removed"))


# -- routes ------------------------------------------------------------------------------

# source/common/router/config_impl.cc: a direct response body larger than the route
# configuration's max_direct_response_body_size_bytes (default 4096) is refused. We never
# set that field, so the default is the limit.
DIRECT_RESPONSE_MAX_BYTES = 4096


@_register("envoy.config.route.v3.Route")
def route(r: Any, path: str, out: Out) -> None:
    _header_options(r, path, out)
    if r.HasField("direct_response") and r.direct_response.HasField("body"):
        body = r.direct_response.body
        kind = body.WhichOneof("specifier")
        if kind in ("inline_string", "inline_bytes"):
            data = getattr(body, kind)
            size = len(data.encode("utf-8") if isinstance(data, str) else data)
            if size > DIRECT_RESPONSE_MAX_BYTES:
                out.append(Violation(join(path, f"direct_response.body.{kind}"),
                                     f"response body size is {size} bytes; Envoy's maximum "
                                     f"is {DIRECT_RESPONSE_MAX_BYTES}"))


@_register("envoy.config.route.v3.VirtualHost", "envoy.config.route.v3.WeightedCluster."
           "ClusterWeight")
def headers_owner(m: Any, path: str, out: Out) -> None:
    _header_options(m, path, out)


@_register("envoy.config.route.v3.RouteConfiguration")
def route_configuration(rc: Any, path: str, out: Out) -> None:
    _header_options(rc, path, out)
    # config_impl.cc (RouteMatcher): "Only unique values for domains are permitted".
    seen: dict[str, int] = {}
    for i, vhost in enumerate(rc.virtual_hosts):
        for j, domain in enumerate(vhost.domains):
            key = domain.lower()
            if key in seen:
                out.append(Violation(f"{join(path, 'virtual_hosts')}[{i}].domains[{j}]",
                                     f"domain {short(domain)} already used by virtual host "
                                     f"{seen[key]}: Envoy permits each domain once"))
            else:
                seen[key] = i


_UINT32_MAX = 4_294_967_295


@_register("envoy.config.route.v3.RouteAction")
def route_action(a: Any, path: str, out: Out) -> None:
    # config_impl.cc: only one way of rewriting the path.
    rewrites = [f for f in ("prefix_rewrite", "regex_rewrite", "path_rewrite_policy")
                if (a.HasField(f) if f != "prefix_rewrite" else bool(a.prefix_rewrite))]
    if len(rewrites) > 1:
        out.append(Violation(join(path, rewrites[1]), "specify only one of prefix_rewrite, "
                             "regex_rewrite or path_rewrite_policy"))
    if a.HasField("weighted_clusters"):
        # config_impl.cc (WeightedClusterEntry): the weights must add up to more than 0
        # and fit in a uint32.
        total = sum(c.weight.value for c in a.weighted_clusters.clusters)
        at = join(path, "weighted_clusters")
        if total == 0:
            out.append(Violation(at, "sum of weights must be greater than 0"))
        elif total > _UINT32_MAX:
            out.append(Violation(at, f"sum of weights {total} exceeds {_UINT32_MAX}"))
    for i, mirror in enumerate(a.request_mirror_policies):
        # config_impl.cc: "Exactly one of cluster or cluster_header in request mirror
        # policy need to be specified".
        if bool(mirror.cluster) == bool(mirror.cluster_header):
            out.append(Violation(f"{join(path, 'request_mirror_policies')}[{i}]",
                                 "exactly one of cluster or cluster_header must be set"))


# -- clusters ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=256)
def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


@_register("envoy.config.cluster.v3.Cluster")
def cluster(c: Any, path: str, out: Out) -> None:
    # source/extensions/load_balancing_policies/maglev/maglev_lb.cc: "The table size of
    # maglev must be prime number" (a size of 1 even crashes Envoy 1.40's validation).
    if c.HasField("maglev_lb_config") and c.maglev_lb_config.HasField("table_size"):
        size = c.maglev_lb_config.table_size.value
        if not _is_prime(size):
            out.append(Violation(join(path, "maglev_lb_config.table_size"),
                                 f"Maglev table size must be prime, got {size}"))
    if c.HasField("ring_hash_lb_config"):
        # ring_hash_lb.cc: "ring hash: minimum_ring_size (...) > maximum_ring_size (...)".
        ring = c.ring_hash_lb_config
        lo = ring.minimum_ring_size.value if ring.HasField("minimum_ring_size") else 1024
        hi = ring.maximum_ring_size.value if ring.HasField("maximum_ring_size") else 8388608
        if lo > hi:
            out.append(Violation(join(path, "ring_hash_lb_config.minimum_ring_size"),
                                 f"minimum_ring_size ({lo}) > maximum_ring_size ({hi})"))
    # source/common/upstream/upstream_impl.cc: ORIGINAL_DST takes only CLUSTER_PROVIDED,
    # and CLUSTER_PROVIDED needs a cluster type that provides a load balancer.
    if c.WhichOneof("cluster_discovery_type") == "type":
        original_dst = c.type == cluster_pb2.Cluster.ORIGINAL_DST
        provided = c.lb_policy == cluster_pb2.Cluster.CLUSTER_PROVIDED
        if original_dst and not provided and not c.HasField("load_balancing_policy"):
            out.append(Violation(join(path, "lb_policy"), "ORIGINAL_DST clusters allow only "
                                 "the CLUSTER_PROVIDED load balancing policy"))
        elif provided and c.type in (cluster_pb2.Cluster.STATIC, cluster_pb2.Cluster.EDS,
                                     cluster_pb2.Cluster.STRICT_DNS):
            out.append(Violation(join(path, "lb_policy"), "CLUSTER_PROVIDED needs a cluster "
                                 "type that provides a load balancer (e.g. ORIGINAL_DST)"))


@_register_at("envoy.extensions.transport_sockets.tls.v3.CommonTlsContext",
              "validation_context")
def validation_context(v: Any, path: str, out: Out) -> None:
    """source/common/tls/cert_validator/default_validator.cc: "SAN-based verification of
    peer certificates without trusted CA is insecure and not allowed" — the system roots
    (`system_root_certs`) do not count as a trusted CA there."""
    if (v.match_typed_subject_alt_names or v.match_subject_alt_names) \
            and not v.HasField("trusted_ca"):
        out.append(Violation(join(path, "match_typed_subject_alt_names"),
                             "Envoy checks subject alt names only against a trusted CA it "
                             "is given (caCertificates), not against the system roots"))


@_register("envoy.extensions.load_balancing_policies.maglev.v3.Maglev")
def maglev_policy(m: Any, path: str, out: Out) -> None:
    if m.HasField("table_size") and not _is_prime(m.table_size.value):
        out.append(Violation(join(path, "table_size"),
                             f"Maglev table size must be prime, got {m.table_size.value}"))


# -- addresses ---------------------------------------------------------------------------

def _is_ip(address: str) -> bool:
    return IPV4.fullmatch(address) is not None or _is_other_ip(address)


@functools.lru_cache(maxsize=1 << 14)
def _is_other_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _socket_ip(address: Any, path: str, out: Out, what: str) -> None:
    # source/common/network/utility.cc (parseInternetAddressNoThrow via
    # resolveProtoSocketAddress): without a resolver_name an address must be an IP
    # literal: "malformed IP address".
    if address.WhichOneof("address") != "socket_address":
        return
    sa = address.socket_address
    if not sa.resolver_name and not _is_ip(sa.address):
        out.append(Violation(join(path, "socket_address.address"),
                             f"{what} must be an IP address, got {short(sa.address)}"))


@_register_at("envoy.config.endpoint.v3.Endpoint", "address", "socket_address")
def endpoint_address(sa: Any, path: str, out: Out) -> None:
    """An endpoint's address.socket_address (see _socket_ip)."""
    if not sa.resolver_name and not _is_ip(sa.address):
        out.append(Violation(join(path, "address"), "an endpoint address must be an IP "
                             f"address, got {short(sa.address)}"))


@_register("envoy.config.listener.v3.Listener")
def listener(lst: Any, path: str, out: Out) -> None:
    if lst.HasField("address"):
        _socket_ip(lst.address, join(path, "address"), out, "a listener address")
    # filter_chain_manager_impl.cc: "multiple filter chains with the same matching rules
    # are defined" and "... with overlapping matching rules are defined": Envoy files each
    # chain under every combination of its match's values (each server name with each
    # destination prefix...), and two chains may not share one (two chains naming one
    # SNI host, say, whatever else they name).
    seen: dict[tuple[Any, ...], int] = {}
    for i, chain in enumerate(lst.filter_chains):
        for key in _match_combinations(chain.filter_chain_match):
            if key in seen:
                out.append(Violation(
                    f"{join(path, 'filter_chains')}[{i}].filter_chain_match",
                    f"matches what filter_chains[{seen[key]}] matches; Envoy refuses "
                    "overlapping filter chains"))
                break
        else:
            for key in _match_combinations(chain.filter_chain_match):
                seen[key] = i


def _cidr_key(r: Any) -> tuple[str, int]:
    """A CidrRange as Envoy files it: the address masked to its length."""
    length = r.prefix_len.value
    try:
        net = ipaddress.ip_network(f"{r.address_prefix}/{length}", strict=False)
    except ValueError:
        return r.address_prefix, length
    return str(net.network_address), length


def _cidr_keys(ranges: Any) -> list[tuple[str, int] | None]:
    return [_cidr_key(r) for r in ranges] or [None]  # none listed: any address


def _match_combinations(m: Any) -> list[tuple[Any, ...]]:
    port = m.destination_port.value if m.HasField("destination_port") else None
    # "*.example.com" is filed under ".example.com" and matched as a suffix.
    names = [n[1:] if n.startswith("*.") else n for n in m.server_names] or [""]
    return [(port, prefix, name, m.transport_protocol, alpn, direct, m.source_type, source,
             source_port)
            for prefix in _cidr_keys(m.prefix_ranges)
            for name in names
            for alpn in list(m.application_protocols) or [""]
            for direct in _cidr_keys(m.direct_source_prefix_ranges)
            for source in _cidr_keys(m.source_prefix_ranges)
            for source_port in list(m.source_ports) or [None]]


@_register("envoy.config.core.v3.CidrRange")
def cidr_range(r: Any, path: str, out: Out) -> None:
    # source/common/network/cidr_range.cc: the prefix must be an IP address.
    if r.address_prefix and not _is_ip(r.address_prefix):
        out.append(Violation(join(path, "address_prefix"),
                             f"must be an IP address, got {short(r.address_prefix)}"))
