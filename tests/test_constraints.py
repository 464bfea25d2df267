"""The constraint checker (translate/constraints/, translate/envoy_checks.py): each PGV
rule kind on a real Envoy message with the exact path reported, every golden output
clean, and — against the real Envoy (`--mode validate`) — what the checker flags is what
Envoy rejects, and the same resource fixed is accepted."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.common.matcher.v3 import matcher_pb2
from envoy.config.core.v3 import address_pb2, base_pb2, health_check_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.metrics.v3 import stats_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.config.tap.v3 import common_pb2 as tap_pb2
from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2 as tls_pb2
from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from xds.core.v3 import extension_pb2

from controlplane.model.errors import Errors
from controlplane.model.istio_common import check_regex
from controlplane.model.re2check import regex_error
from controlplane.translate.constraints import (
    DURATION_MAX_SECONDS,
    TIMESTAMP_MAX_SECONDS,
    Violation,
    check,
)
from controlplane.translate.envoy_checks import format_error
from controlplane.xds import types
from tests.harness import envoy_binary
from tests.test_golden import CASES, translate_case, validation_bootstrap


def paths(message: Any) -> list[str]:
    return [v.path for v in check(message)]


def route(**kw: Any) -> rc.Route:
    r = rc.Route(match=rc.RouteMatch(prefix="/"), **kw)
    if not r.HasField("direct_response") and not r.HasField("redirect"):
        r.route.cluster = "c"
    return r


# -- PGV rule kinds ----------------------------------------------------------------------

def test_a_valid_route_is_clean() -> None:
    assert check(route()) == []


def test_message_required_and_oneof_required() -> None:
    assert paths(rc.Route()) == ["match", "action"]


def test_string_min_len_on_repeated_items() -> None:
    assert paths(route(request_headers_to_remove=["x-a", ""])) == ["request_headers_to_remove[1]"]


def test_string_well_known_header_value_not_strict() -> None:
    # strict=false (HeaderValue.value): only NUL, CR and LF are refused.
    ok = route(request_headers_to_add=[base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key="x-a", value="tab\there \x01"))])
    assert check(ok) == []
    for bad in ("a\nb", "a\rb", "a\x00b"):
        r = route(request_headers_to_add=[base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key="x-a", value=bad))])
        [v] = check(r)
        assert v.path == "request_headers_to_add[0].header.value"
        assert "well_known_regex" in v.message


def test_string_well_known_header_name_strict_and_loose() -> None:
    # internal_only_headers: strict=false, so a space passes and only NUL/CR/LF fail.
    config = route_pb2.RouteConfiguration(name="r", internal_only_headers=["a b", "a\nb"])
    assert paths(config) == ["internal_only_headers[1]"]
    # strict (the default): RFC 7230 token characters, as PGV spells them.
    hc = health_check_pb2.HealthCheck.HttpHealthCheck(path="/", host="a\x01")
    [v] = check(hc)
    assert v.path == "host" and "HTTP header value" in v.message


def test_string_max_bytes_and_bytes_max_len() -> None:
    long_key = base_pb2.HeaderValue(key="k" * 16385, value="v")
    assert paths(long_key) == ["key"]
    raw = base_pb2.HeaderValue(key="k", raw_value=b"v" * 16385)
    assert paths(raw) == ["raw_value"]


def test_string_pattern() -> None:
    m = rc.Route(match=rc.RouteMatch(path_separated_prefix="/a/"), route=rc.RouteAction(
        cluster="c"))
    [v] = check(m)
    assert v.path == "match.path_separated_prefix" and "pattern" in v.message


def test_string_in() -> None:
    m = protocol_pb2.SchemeHeaderTransformation(scheme_to_overwrite="ftp")
    [v] = check(m)
    assert v.path == "scheme_to_overwrite" and "(in)" in v.message and "'ftp'" in v.message


def test_uint32_lte_through_oneofs() -> None:
    ep = endpoint_components_pb2.Endpoint(address=address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address="10.0.0.1", port_value=70000)))
    assert paths(ep) == ["address.socket_address.port_value"]


def test_uint32_range() -> None:
    r = rc.Route(match=rc.RouteMatch(prefix="/"),
                 direct_response=rc.DirectResponseAction(status=99))
    [v] = check(r)
    assert v.path == "direct_response.status" and "99" in v.message


def test_double_range_and_wrapper() -> None:
    c = cluster_pb2.Cluster(name="c", connect_timeout=duration_pb2.Duration(seconds=1))
    c.common_lb_config.healthy_panic_threshold.value = 101
    c.outlier_detection.CopyFrom(outlier_detection_pb2.OutlierDetection())
    c.outlier_detection.max_ejection_percent.value = 101
    assert paths(c) == ["outlier_detection.max_ejection_percent",
                        "common_lb_config.healthy_panic_threshold.value"]


def test_enum_defined_only_and_not_in() -> None:
    c = cluster_pb2.Cluster(name="c", connect_timeout=duration_pb2.Duration(seconds=1),
                            lb_policy=99)
    assert paths(c) == ["lb_policy"]
    # proto3: the unset enum is its default (0), which not_in refuses, as PGV does.
    san = tls_pb2.SubjectAltNameMatcher(matcher={"exact": "a"})
    [v] = check(san)
    assert v.path == "san_type" and "not_in" in v.message


def test_bool_const() -> None:
    assert paths(tap_pb2.MatchPredicate(any_match=False)) == ["any_match"]
    assert check(tap_pb2.MatchPredicate(any_match=True)) == []


def test_repeated_min_max_items_unique_and_items() -> None:
    assert paths(rc.VirtualHost(name="v")) == ["domains"]
    out = tap_pb2.OutputConfig(sinks=[tap_pb2.OutputSink(streaming_admin={}),
                                      tap_pb2.OutputSink(streaming_admin={})])
    assert paths(out) == ["sinks"]
    buckets = stats_pb2.HistogramBucketSettings(
        match={"prefix": "a"}, buckets=[1.0, 1.0, -1.0])
    assert paths(buckets) == ["buckets", "buckets[2]"]
    statuses = accesslog_pb2.GrpcStatusFilter(statuses=[0, 99])
    assert paths(statuses) == ["statuses[1]"]


def test_map_keys_and_min_pairs() -> None:
    md = base_pb2.Metadata(filter_metadata={"": struct_pb2.Struct(), "ok": struct_pb2.Struct()})
    assert paths(md) == ["filter_metadata['']<key>"]
    tree = matcher_pb2.Matcher.MatcherTree(input={"name": "i"}, exact_match_map={})
    assert "exact_match_map.map" in paths(tree)


def test_any_required_and_recursion_into_packed_types() -> None:
    assert paths(extension_pb2.TypedExtensionConfig(name="x")) == ["typed_config"]
    fault = fault_pb2.HTTPFault()
    fault.abort.http_status = 99
    fault.abort.percentage.numerator = 1
    r = route()
    r.typed_per_filter_config["envoy.filters.http.fault"].Pack(fault)
    assert paths(r) == ["typed_per_filter_config['envoy.filters.http.fault'].abort.http_status"]


def test_duration_rules_required_gt_and_nanos() -> None:
    assert paths(rc.RetryPolicy.RetryBackOff()) == ["base_interval"]
    c = cluster_pb2.Cluster(name="c")  # connect_timeout unset: gt 0 is not required
    assert check(c) == []
    c.connect_timeout.CopyFrom(duration_pb2.Duration())
    [v] = check(c)
    assert v.path == "connect_timeout" and "> 0ms" in v.message
    c.connect_timeout.nanos = 1  # one nanosecond is > 0
    assert check(c) == []


def test_duration_and_timestamp_protobuf_range() -> None:
    over = duration_pb2.Duration(seconds=DURATION_MAX_SECONDS + 1)
    assert any("protobuf's range" in v.message for v in check(over))
    mixed = duration_pb2.Duration(seconds=1, nanos=-1)
    assert any("same sign" in v.message for v in check(mixed))
    assert [v.path for v in check(timestamp_pb2.Timestamp(seconds=TIMESTAMP_MAX_SECONDS + 1))
            ] == [""]


def test_wrapper_with_rules_applies_to_the_value() -> None:
    opts = protocol_pb2.HttpProtocolOptions()
    opts.max_requests_per_connection.value = 0  # unset wrapper is fine; 0 is not >= 1?
    assert isinstance(check(opts), list)  # no rule on it: must not crash
    lb = endpoint_components_pb2.LbEndpoint(endpoint=endpoint_components_pb2.Endpoint(
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address="10.0.0.1", port_value=80))))
    lb.load_balancing_weight.value = 0  # UInt32Value gte 1
    assert paths(lb) == ["load_balancing_weight"]


def test_violation_is_frozen_and_reads_well() -> None:
    v = Violation("a.b", "must be")
    with pytest.raises(AttributeError):
        v.path = "c"  # type: ignore[misc]
    assert str(v) == "a.b: must be"


# -- Envoy's checks in code --------------------------------------------------------------

@pytest.mark.parametrize(("regex", "why"), [
    ("(?x)a b", "invalid perl operator"),
    (r"a\Z", "invalid escape sequence"),
    ("a{1001}", "invalid repetition size"),
    ("[0-9]{1000}" * 33, "program size 33004"),  # over the 32768 our bootstrap sets
])
def test_regexes_envoy_rejects(regex: str, why: str) -> None:
    r = rc.Route(match=rc.RouteMatch(safe_regex={"regex": regex}), route={"cluster": "c"})
    [v] = check(r)
    assert v.path == "match.safe_regex.regex" and why in v.message


def test_regex_limits_match_envoy_program_sizes() -> None:
    assert regex_error("a{96}", 100) is None  # size 100: exactly Envoy's default limit
    assert regex_error("a{97}", 100) is not None  # 101
    assert regex_error("[0-9]{200}") is None  # 204: Istio accepts it, so must we
    assert regex_error("[0-9]{1000}" * 32) is None  # 32004: under the bootstrap's 32768
    assert regex_error(".{30}") is None  # Envoy counts 64 here, not UTF-8's 244
    assert regex_error("(?i)/users/[0-9]+/profile") is None
    empty = rc.Route(match=rc.RouteMatch(safe_regex={"regex": ""}), route={"cluster": "c"})
    [v] = check(empty)
    assert v.path == "match.safe_regex.regex" and "min_len" in v.message


def test_regex_rewrite_pattern_is_checked() -> None:
    r = route()
    r.route.regex_rewrite.pattern.regex = "[0-9]{1000}" * 33
    r.route.regex_rewrite.substitution = "/"
    assert paths(r) == ["route.regex_rewrite.pattern.regex"]


def test_istio_regex_check_uses_envoys_rules() -> None:
    errs = Errors()
    check_regex("[0-9]{1000}" * 33, "spec.http[0].match[0].uri.regex", errs)
    check_regex("(?=a)", "spec.http[0].match[1].uri.regex", errs)
    check_regex("/users/[0-9]+", "spec.http[0].match[2].uri.regex", errs)
    text = str(errs.items if hasattr(errs, "items") else errs)
    assert "match[0].uri.regex" in text and "match[1].uri.regex" in text
    assert "match[2]" not in text


@pytest.mark.parametrize(("value", "bad"), [
    ("50%", True), ("a%b%c", True), ("%REQ(x)", True), ("%FOO", True), ("%%%", True),
    ("%UNKNOWN%", True), ("%req(x)%", True), ("%REQ()%", True), ("%PROTOCOL(x)%", True),
    ("%REQ(x?y?z)%", True),
    ("100%%", False), ("%REQ(x-foo)%", False), ("%START_TIME(%s)%", False),
    ("%DOWNSTREAM_REMOTE_ADDRESS%", False), ('%UPSTREAM_METADATA(["a","b"])%', False),
    ("%REQ(x):5%", False), ("%PROTOCOL%:5", False), ("no percent", False),
])
def test_header_value_substitution_format(value: str, bad: bool) -> None:
    assert (format_error(value) is not None) is bad


def test_header_value_with_bare_percent_is_reported_at_its_path() -> None:
    vh = rc.VirtualHost(name="v", domains=["a"], routes=[route(request_headers_to_add=[
        base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key="x-a", value="50%"))])])
    assert paths(vh) == ["routes[0].request_headers_to_add[0].header.value"]


@pytest.mark.parametrize("name", ["host", "Host", ":authority", ":path", ":status"])
def test_host_and_pseudo_headers_cannot_be_set_or_removed(name: str) -> None:
    r = route(request_headers_to_add=[base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value="v"))], response_headers_to_remove=[name])
    assert paths(r) == ["request_headers_to_add[0].header.key", "response_headers_to_remove[0]"]


def test_direct_response_body_limit() -> None:
    ok = rc.Route(match=rc.RouteMatch(prefix="/"), direct_response=rc.DirectResponseAction(
        status=200, body=base_pb2.DataSource(inline_string="a" * 4096)))
    assert check(ok) == []
    ok.direct_response.body.inline_string += "a"
    assert paths(ok) == ["direct_response.body.inline_string"]


def test_maglev_table_size_must_be_prime() -> None:
    c = cluster_pb2.Cluster(name="c", lb_policy=cluster_pb2.Cluster.MAGLEV)
    c.maglev_lb_config.table_size.value = 65537
    assert check(c) == []
    c.maglev_lb_config.table_size.value = 65536
    assert paths(c) == ["maglev_lb_config.table_size"]


def test_negative_and_oversized_durations() -> None:
    r = route()
    r.route.timeout.seconds = -1
    assert paths(r) == ["route.timeout"]
    r.route.timeout.seconds = 9_223_372_036
    assert paths(r) == ["route.timeout"]
    r.route.timeout.seconds = 9_223_372_035
    assert check(r) == []


def test_duplicate_domains_and_endpoint_ip() -> None:
    config = route_pb2.RouteConfiguration(name="r", virtual_hosts=[
        rc.VirtualHost(name="a", domains=["x", "y"], routes=[route()]),
        rc.VirtualHost(name="b", domains=["X"], routes=[route()])])
    assert paths(config) == ["virtual_hosts[1].domains[0]"]
    ep = endpoint_components_pb2.Endpoint(address=address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address="not-an-ip", port_value=80)))
    assert paths(ep) == ["address.socket_address.address"]


# -- every golden output checks clean ----------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_golden_outputs_check_clean(case: str) -> None:
    out, _ = translate_case(case)
    for type_url, messages in out.items():
        for m in messages:
            assert check(m) == [], (types.short(type_url), m.name if hasattr(m, "name")
                                    else m.cluster_name)


# -- agreement with the real Envoy -------------------------------------------------------

def _first_route(out: dict[str, list[Any]]) -> rc.Route:
    return out[types.ROUTE][0].virtual_hosts[0].routes[0]


def _set_regex(regex: str) -> Callable[[dict[str, list[Any]]], None]:
    def edit(out: dict[str, list[Any]]) -> None:
        _first_route(out).match.safe_regex.regex = regex
    return edit


def _add_header(key: str, value: str) -> Callable[[dict[str, list[Any]]], None]:
    def edit(out: dict[str, list[Any]]) -> None:
        del _first_route(out).request_headers_to_add[:]
        _first_route(out).request_headers_to_add.add(header={"key": key, "value": value})
    return edit


def _remove_header(name: str) -> Callable[[dict[str, list[Any]]], None]:
    def edit(out: dict[str, list[Any]]) -> None:
        del _first_route(out).request_headers_to_remove[:]
        _first_route(out).request_headers_to_remove.append(name)
    return edit


def _header_prefix(prefix: str) -> Callable[[dict[str, list[Any]]], None]:
    def edit(out: dict[str, list[Any]]) -> None:
        _first_route(out).match.headers.add(name="x-a", string_match={"prefix": prefix})
    return edit


def _timeout(seconds: int, nanos: int = 0) -> Callable[[dict[str, list[Any]]], None]:
    def edit(out: dict[str, list[Any]]) -> None:
        _first_route(out).route.timeout.CopyFrom(duration_pb2.Duration(seconds=seconds,
                                                                         nanos=nanos))
    return edit


def _connect_timeout(nanos: int) -> Callable[[dict[str, list[Any]]], None]:
    def edit(out: dict[str, list[Any]]) -> None:
        out[types.CLUSTER][0].connect_timeout.CopyFrom(duration_pb2.Duration(nanos=nanos))
    return edit


def _body(size: int) -> Callable[[dict[str, list[Any]]], None]:
    def edit(out: dict[str, list[Any]]) -> None:
        r = _first_route(out)
        r.ClearField("route")
        r.direct_response.status = 200
        r.direct_response.body.inline_string = "a" * size
    return edit


def _maglev(size: int) -> Callable[[dict[str, list[Any]]], None]:
    def edit(out: dict[str, list[Any]]) -> None:
        c = out[types.CLUSTER][0]
        c.lb_policy = cluster_pb2.Cluster.MAGLEV
        c.maglev_lb_config.table_size.value = size
    return edit


def _sni_chains(*chains: tuple[list[str], str]) -> Callable[[dict[str, list[Any]]], None]:
    """Filter chains matched by server names (and a destination prefix, when given)."""
    def edit(out: dict[str, list[Any]]) -> None:
        listener = out[types.LISTENER][0]
        for names, prefix in chains:
            chain = listener.filter_chains.add()
            chain.CopyFrom(listener.default_filter_chain)
            chain.filter_chain_match.server_names.extend(names)
            if prefix:
                address, _, length = prefix.partition("/")
                chain.filter_chain_match.prefix_ranges.add(
                    address_prefix=address, prefix_len={"value": int(length)})
    return edit


def _tls(sans: tuple[str, ...]) -> Callable[[dict[str, list[Any]]], None]:
    def edit(out: dict[str, list[Any]]) -> None:
        from controlplane.model.destination_rule import ClientTls
        from controlplane.model.service import ServicePort
        from controlplane.translate.upstream_tls import transport_socket
        socket = transport_socket(ClientTls("SIMPLE", sni="a", subject_alt_names=sans),
                                  ServicePort(name="http", port=80, target_port=80))
        assert socket is not None
        out[types.CLUSTER][0].transport_socket.CopyFrom(socket)
    return edit


# (name, the edit Envoy rejects, the same edit fixed)
AGREEMENT = [
    ("regex-extended-flag", _set_regex("(?x)/a b"), _set_regex("/ab")),
    ("regex-backslash-Z", _set_regex(r"/a\Z"), _set_regex("/a$")),
    ("regex-repeat-1001", _set_regex("/a{1001}"), _set_regex("/a{10}")),
    # Over the limit our bootstrap (and the validation bootstrap) sets; Istio's 1,024
    # characters allow it, so only RE2's program size can catch it.
    ("regex-program-size", _set_regex("/" + "[0-9]{1000}" * 33), _set_regex("/[0-9]{200}")),
    ("regex-empty", _set_regex(""), _set_regex(".*")),
    ("header-bare-percent", _add_header("x-a", "50%"), _add_header("x-a", "50%%")),
    ("header-unknown-command", _add_header("x-a", "%NOPE%"),
     _add_header("x-a", "%HOSTNAME%")),
    ("header-newline", _add_header("x-a", "a\nb"), _add_header("x-a", "a b")),
    ("header-nul", _add_header("x-a", "a\x00b"), _add_header("x-a", "ab")),
    ("set-host", _add_header("host", "h"), _add_header("x-host", "h")),
    ("remove-host", _remove_header("host"), _remove_header("x-host")),
    ("remove-pseudo", _remove_header(":path"), _remove_header("x-path")),
    ("header-match-empty-prefix", _header_prefix(""), _header_prefix("a")),
    ("negative-timeout", _timeout(-1), _timeout(1)),
    ("timeout-past-int64-nanos", _timeout(9_223_372_036), _timeout(9_223_372_035)),
    ("connect-timeout-zero", _connect_timeout(0), _connect_timeout(1)),
    ("direct-response-over-4KiB", _body(4097), _body(4096)),
    ("maglev-not-prime", _maglev(65536), _maglev(65537)),
    ("filter-chains-share-a-server-name", _sni_chains((["a", "b"], ""), (["b", "c"], "")),
     _sni_chains((["a", "b"], ""), (["c"], ""))),
    ("filter-chains-share-a-masked-prefix",
     _sni_chains((["a"], "10.1.2.3/8"), (["a"], "10.0.0.0/8")),
     _sni_chains((["a"], "10.1.2.3/16"), (["a"], "10.0.0.0/8"))),
    ("san-check-with-system-roots", _tls(("a",)), _tls(())),
]


def _envoy_accepts(out: dict[str, list[Any]], tmp_path: Path, name: str) -> tuple[bool, str]:
    config = tmp_path / f"{name}.json"
    config.write_text(json.dumps(validation_bootstrap(out)))
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(config),
                             "-l", "critical"], capture_output=True, text=True, timeout=60)
    return result.returncode == 0, (result.stdout + result.stderr)[-2000:]


@pytest.mark.e2e
@pytest.mark.parametrize(("name", "bad", "fixed"), AGREEMENT, ids=[a[0] for a in AGREEMENT])
def test_checker_agrees_with_envoy(name: str, bad: Callable[[dict[str, list[Any]]], None],
                                   fixed: Callable[[dict[str, list[Any]]], None],
                                   tmp_path: Path) -> None:
    for edit, should_pass in ((bad, False), (fixed, True)):
        out, _ = translate_case("http-service")
        edit(out)
        found = [v for ms in out.values() for m in ms for v in check(m)]
        accepted, log = _envoy_accepts(out, tmp_path, f"{name}-{should_pass}")
        assert accepted is should_pass, log
        assert (not found) is should_pass, found


# -- the compiled walker against the reference -------------------------------------------
#
# `check` runs generated code (constraints/codegen.py, "the compiled walker"); `check_reference`
# interprets the same plans. Over the golden outputs, mutated at random through their
# descriptors (any field at any depth set to an edge value, cleared, emptied, a oneof
# switched, an Any repacked or corrupted), both must report the same violations. Order may
# differ: the compiled walker reports in field-number order, unset fields included.

_STRINGS = ["", "a", "x-a", "host", "Host", ":path", "a b", "a\nb", "a\x00b", "tab\t",
            "50%", "%%", "%REQ(x)%", "%NOPE%", "10.0.0.1", "256.0.0.1", "010.0.0.1", "::1",
            "fe80::1%eth0", "not-an-ip", "/a", "/", "[0-9]{200}", "(?x)a b", "a" * 300,
            "é", "outbound|80||a.b.svc.cluster.local", "k" * 16385]
_BYTES = [b"", b"a", b"\x00\x01", b"v" * 16385]
_INTS = [0, 1, -1, 2, 7, 99, 100, 101, 128, 200, 1024, 65535, 65536, 2**31 - 1, -2**31,
         2**32 - 1, 2**63 - 1, -2**63, 9_223_372_036, 315_576_000_001, 999_999_999,
         1_000_000_000]
_FLOATS = [0.0, -1.0, 0.5, 1.0, 100.0, 101.0, float("nan"), float("inf"), -0.0]
_PACKED = [fault_pb2.HTTPFault, route_pb2.RouteConfiguration, rc.VirtualHost,
           cluster_pb2.Cluster, duration_pb2.Duration, extension_pb2.TypedExtensionConfig]


def _scalar(fd: Any, rng: Any) -> Any:
    t = fd.cpp_type
    if t == fd.CPPTYPE_STRING:
        return rng.choice(_BYTES) if fd.type == fd.TYPE_BYTES else rng.choice(_STRINGS)
    if t == fd.CPPTYPE_BOOL:
        return rng.random() < 0.5
    if t in (fd.CPPTYPE_DOUBLE, fd.CPPTYPE_FLOAT):
        return rng.choice(_FLOATS)
    if t == fd.CPPTYPE_ENUM:
        values = [v.number for v in fd.enum_type.values]
        return rng.choice([*values, 99, -1])  # undefined values: open enums take them
    return rng.choice(_INTS)


def _set_random(m: Any, fd: Any, rng: Any, depth: int) -> None:
    """Give field `fd` of `m` a random value (or clear it); values the field refuses
    (out of range, closed enums) are skipped."""
    name = fd.name
    if rng.random() < 0.15:
        m.ClearField(name)
        return
    try:
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            key_fd, value_fd = (fd.message_type.fields_by_name[k] for k in ("key", "value"))
            target = getattr(m, name)
            key = _scalar(key_fd, rng)
            if value_fd.message_type is not None:
                _fill(target[key], rng, depth - 1)
            else:
                target[key] = _scalar(value_fd, rng)
        elif fd.is_repeated:
            target = getattr(m, name)
            for _ in range(rng.randint(1, 2)):
                if fd.message_type is not None:
                    _fill(target.add(), rng, depth - 1)
                else:
                    target.append(_scalar(fd, rng))
        elif fd.message_type is not None:
            _fill(getattr(m, name), rng, depth - 1)
        else:
            setattr(m, name, _scalar(fd, rng))
    except (ValueError, TypeError):
        pass


def _fill(m: Any, rng: Any, depth: int) -> None:
    """Mark `m` present and, depth allowing, set a few random fields of it."""
    m.SetInParent()
    if m.DESCRIPTOR.full_name == "google.protobuf.Any":
        _repack(m, rng, depth)
        return
    fields = m.DESCRIPTOR.fields
    if depth <= 0 or not fields:
        return
    for _ in range(rng.randint(0, 2)):
        _set_random(m, rng.choice(fields), rng, depth)


def _repack(a: Any, rng: Any, depth: int) -> None:
    roll = rng.random()
    if roll < 0.6:
        inner = rng.choice(_PACKED)()
        _fill(inner, rng, max(depth, 1))
        a.Pack(inner)
    elif roll < 0.8:
        a.value = b"\xff\xff\xff"  # undecodable for whatever type_url names
    else:
        a.type_url = "type.googleapis.com/unknown.Type"


def _mutate(m: Any, rng: Any) -> None:
    """One random edit somewhere in `m`: usually in a sub-message that is set (so edits
    reach deep), else on a random field of `m` itself."""
    if m.DESCRIPTOR.full_name == "google.protobuf.Any":
        _repack(m, rng, 2)
        return
    set_messages = [(fd, v) for fd, v in m.ListFields() if fd.message_type is not None
                    and not fd.message_type.GetOptions().map_entry]
    if set_messages and rng.random() < 0.7:
        fd, value = rng.choice(set_messages)
        if fd.is_repeated:
            value = rng.choice(list(value))
        _mutate(value, rng)
        return
    if m.DESCRIPTOR.fields:
        _set_random(m, rng.choice(m.DESCRIPTOR.fields), rng, 3)


def _found(violations: list[Violation]) -> list[tuple[str, str]]:
    return sorted((v.path, v.message) for v in violations)


def _golden_messages() -> list[Any]:
    messages = []
    for case in CASES:
        out, _ = translate_case(case)
        for ms in out.values():
            messages.extend(m for m in ms if hasattr(m, "DESCRIPTOR"))
    return messages


def test_compiled_walker_agrees_with_reference_on_mutated_resources() -> None:
    import random

    from controlplane.translate.constraints import check_reference

    rng = random.Random(20261202)
    bases = _golden_messages()
    assert len({type(m) for m in bases}) >= 4  # clusters, assignments, listeners, routes
    compared = found = 0
    for _ in range(1500):
        m = type(base := rng.choice(bases))()
        m.CopyFrom(base)
        for _ in range(rng.randint(1, 4)):
            _mutate(m, rng)
        got, want = check(m, "r"), check_reference(m, "r")
        assert _found(got) == _found(want), m
        compared += 1
        found += bool(want)
    # The mutations must break rules often, or this compares empty lists.
    assert found > compared // 4, (found, compared)


def test_compiled_walker_agrees_with_reference_on_random_messages() -> None:
    """Built from nothing, so unset required fields, empty oneofs and defaults are hit."""
    import random

    from controlplane.translate.constraints import check_reference

    rng = random.Random(7)
    kinds = [cluster_pb2.Cluster, route_pb2.RouteConfiguration, rc.Route, rc.VirtualHost,
             endpoint_components_pb2.LbEndpoint, address_pb2.Address, fault_pb2.HTTPFault,
             health_check_pb2.HealthCheck, outlier_detection_pb2.OutlierDetection,
             matcher_pb2.Matcher, stats_pb2.HistogramBucketSettings, tap_pb2.MatchPredicate,
             base_pb2.Metadata, timestamp_pb2.Timestamp, duration_pb2.Duration]
    for _ in range(1500):
        m = rng.choice(kinds)()
        _fill(m, rng, 4)
        assert _found(check(m)) == _found(check_reference(m)), m


def test_fast_paths_imply_their_rules() -> None:
    """The inline expressions the compiled walker tries first (IPv4, header patterns)
    never pass a value the full rule refuses; IPV4 is exactly ipaddress's IPv4."""
    import ipaddress
    import random

    from controlplane.translate.constraints import rules
    from controlplane.translate.violations import IPV4

    rng = random.Random(3)
    alphabet = "0123456789.:abcdef%x \t\n\r\x00\x01\x7f,;éÿ٣"
    samples = [*_STRINGS, "1.2.3.4", "255.255.255.255", "0.0.0.0", "1.2.3.04", "1.2.3",
               "1.2.3.4.5", "1.2.3.256", "\u0661.2.3.4", "1.2.3.4\n", " 1.2.3.4"]
    samples += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
                for _ in range(20000)]
    samples += [".".join(str(rng.randint(0, 300)) for _ in range(4)) for _ in range(2000)]
    for s in samples:
        try:
            ipv4 = ipaddress.ip_address(s).version == 4
        except ValueError:
            ipv4 = False
        assert (IPV4.fullmatch(s) is not None) is ipv4, s
    for pattern, (expr, consts) in rules._HEADER_FAST.items():
        fast = eval("lambda v: " + expr.format(v="v", **{k: f"_{k}" for k in consts}),
                    {f"_{k}": value for k, value in consts.items()})
        for s in samples:
            if fast(s):
                assert pattern.search(s) is not None, (pattern.pattern, s)


def _random_lb_endpoint(rng: Any) -> endpoint_components_pb2.LbEndpoint:
    """Mostly the common shape (an IPv4 socket address and a port), with the values and
    the extras that take an endpoint out of it or make it invalid."""
    octet = lambda: rng.choice([0, 1, 9, 10, 99, 100, 199, 200, 249, 250, 255, 256, 300])  # noqa: E731
    ip = ".".join(str(octet()) for _ in range(4))
    address = rng.choice([ip, ip, ip, "1.2.3.04", "::1", "10.0.0", "host.example", "",
                          "1.2.3.4 ", "\u0661.2.3.4"])
    lb = endpoint_components_pb2.LbEndpoint()
    sa = lb.endpoint.address.socket_address
    sa.address = address
    roll = rng.random()
    if roll < 0.85:
        sa.port_value = rng.choice([0, 1, 127, 128, 8080, 16383, 16384, 65535, 65536,
                                    2**32 - 1])
    elif roll < 0.92:
        sa.named_port = "http"
    if rng.random() < 0.6:
        lb.health_status = rng.choice([0, 1, 2, 5, 6, 99, -1])
    extras: list[Callable[[], None]] = [
        lambda: setattr(sa, "resolver_name", "r"),
        lambda: setattr(sa, "protocol", rng.choice([1, 99])),
        lambda: setattr(sa, "ipv4_compat", True),
        lambda: setattr(lb.endpoint, "hostname", "h"),
        lambda: lb.load_balancing_weight.SetInParent(),
        lambda: setattr(lb.load_balancing_weight, "value", rng.choice([0, 1])),
        lambda: lb.metadata.filter_metadata[rng.choice(["", "k"])].SetInParent(),
        lambda: setattr(lb.endpoint.health_check_config, "port_value", 70000),
        lambda: lb.endpoint.additional_addresses.add(),
        lambda: setattr(lb, "endpoint_name", "n"),
        lambda: lb.endpoint.address.pipe.SetInParent(),
        lambda: lb.endpoint.address.socket_address.ClearField("address"),
    ]
    if rng.random() < 0.3:
        rng.choice(extras)()
    return lb


def test_lb_endpoint_fast_path_agrees_with_the_walk() -> None:
    """The hand-written wire-shape fast path for LbEndpoint (constraints/shapes.py) passes
    only endpoints the full walk passes, takes the common ones, and agrees inside whole
    load assignments (where the memo and the fast path run)."""
    import random

    from controlplane.translate import constraints as c
    from controlplane.translate.constraints import shapes

    assert shapes._fast_shape(endpoint_components_pb2.LbEndpoint.DESCRIPTOR) is not None, (
        "the LbEndpoint fast path is off: its types' rules or checks changed; check the "
        "shape still implies them, then update _SHAPE_FINGERPRINTS")
    rng = random.Random(11)
    taken = 0
    endpoints = [_random_lb_endpoint(rng) for _ in range(6000)]
    for lb in endpoints:
        want = c.check_reference(lb)
        if shapes._lb_endpoint_valid(lb.SerializePartialToString()):
            taken += 1
            assert want == [], lb
    assert taken > 200, taken  # the common shape is recognised
    for start in range(0, len(endpoints), 50):
        cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="c")
        cla.endpoints.add().lb_endpoints.extend(endpoints[start:start + 50])
        c.reset_memos()
        assert _found(check(cla)) == _found(c.check_reference(cla))
        assert _found(check(cla)) == _found(c.check_reference(cla))  # memo warm


def test_lb_endpoint_fast_path_checks_the_lengths() -> None:
    """Bytes that read as the common shape only if the lengths are ignored: the socket
    address ends before the port, whose tag then sits in the Address as an unknown
    field. The endpoint has no port_specifier, so it must be walked and refused."""
    from controlplane.translate.constraints import shapes

    sa = b"\x12\x08" + b"10.0.0.1"
    address = b"\x0a" + bytes([len(sa)]) + sa + b"\x18\x50"
    endpoint = b"\x0a" + bytes([len(address)]) + address
    lb = endpoint_components_pb2.LbEndpoint.FromString(b"\x0a" + bytes([len(endpoint)])
                                                       + endpoint)
    b = lb.SerializePartialToString()
    assert shapes._LB_ENDPOINT_SHAPE.fullmatch(b) is not None  # the regex alone is fooled
    assert not shapes._lb_endpoint_valid(b)
    assert paths(lb) == ["endpoint.address.socket_address.port_specifier"]


def _shaped_lb_endpoint(rng: Any) -> endpoint_components_pb2.LbEndpoint:
    """An endpoint of the common shape: what the translator makes."""
    lb = endpoint_components_pb2.LbEndpoint()
    sa = lb.endpoint.address.socket_address
    sa.address = ".".join(str(rng.randint(0, 255)) for _ in range(4))
    sa.port_value = rng.choice([0, 80, 8080, 15000, 16383])
    if rng.random() < 0.7:
        lb.health_status = rng.choice([1, 2, 3])
    return lb


def test_assignment_fast_path_agrees_with_the_walk() -> None:
    """The ClusterLoadAssignment wire shape (shapes._assignment_valid) passes only
    assignments the full walk passes, takes the translator's, and `check` agrees with
    the reference with it in play: names and localities long enough for multi-byte
    lengths, empty localities, and what takes an assignment out of the shape."""
    import random

    from controlplane.translate import constraints as c
    from controlplane.translate.constraints import shapes

    assert shapes._fast_shape(endpoint_pb2.ClusterLoadAssignment.DESCRIPTOR) is not None, (
        "the ClusterLoadAssignment fast path is off: its types' rules or checks "
        "changed; check the shape still implies them, then update _SHAPE_FINGERPRINTS")
    rng = random.Random(5)
    taken = 0
    for _ in range(1500):
        cla = endpoint_pb2.ClusterLoadAssignment(
            cluster_name=rng.choice(["c", "outbound|80||a.b.svc.cluster.local", "x" * 200,
                                     "é", ""]))
        for _ in range(rng.randint(0, 3)):
            locality = cla.endpoints.add()
            for _ in range(rng.choice([0, 1, 5, 12])):
                locality.lb_endpoints.append(_shaped_lb_endpoint(rng) if rng.random() < 0.95
                                             else _random_lb_endpoint(rng))
            roll = rng.random()
            if roll < 0.05:
                locality.priority = rng.choice([1, 200])
            elif roll < 0.1:
                locality.locality.zone = "z"
            elif roll < 0.15:
                locality.load_balancing_weight.value = rng.choice([0, 1])
        roll = rng.random()
        if roll < 0.05:
            cla.policy.overprovisioning_factor.value = rng.choice([0, 140])
        elif roll < 0.1:
            cla.named_endpoints["n"].address.socket_address.address = "x"
        want = c.check_reference(cla)
        if shapes._assignment_valid(cla.SerializePartialToString()):
            taken += 1
            assert want == [], cla
        assert _found(check(cla)) == _found(want), cla
    assert taken > 300, taken


def test_assignment_fast_path_checks_the_lengths() -> None:
    """The endpoint whose port tag sits outside its socket address (see the LbEndpoint
    test above), inside an assignment of good endpoints."""
    import random

    from controlplane.translate.constraints import shapes

    sa = b"\x12\x08" + b"10.0.0.1"
    address = b"\x0a" + bytes([len(sa)]) + sa + b"\x18\x50"
    endpoint = b"\x0a" + bytes([len(address)]) + address
    bad = endpoint_components_pb2.LbEndpoint.FromString(b"\x0a" + bytes([len(endpoint)])
                                                        + endpoint)
    rng = random.Random(1)
    cla = endpoint_pb2.ClusterLoadAssignment(cluster_name="c")
    cla.endpoints.add().lb_endpoints.extend([_shaped_lb_endpoint(rng), bad,
                                             _shaped_lb_endpoint(rng)])
    assert not shapes._assignment_valid(cla.SerializePartialToString())
    assert paths(cla) == ["endpoints[0].lb_endpoints[1].endpoint.address.socket_address."
                          "port_specifier"]


def test_assignment_fast_path_reads_only_localities() -> None:
    """An entry of the common shape under another field of the assignment (here a
    named endpoint, which reads it as an Endpoint with an empty socket address) is not
    taken for a locality: the bytes are refused and the walk finds what is wrong."""
    from controlplane.translate.constraints import shapes

    lb = endpoint_components_pb2.LbEndpoint()
    lb.endpoint.address.socket_address.address = "10.0.0.1"
    lb.endpoint.address.socket_address.port_value = 80
    body = lb.SerializeToString()
    item = b"\x12" + bytes([len(body)]) + body
    locality = b"\x0a\x01c" + b"\x12" + bytes([len(item)]) + item
    named = b"\x0a\x01c" + b"\x2a" + bytes([len(item)]) + item  # named_endpoints (5)
    assert shapes._assignment_valid(locality)
    assert not shapes._assignment_valid(named)
    unnamed = b"\x0a\x00" + locality[3:]  # an empty cluster_name, written out
    assert not shapes._assignment_valid(unnamed)
    assert paths(endpoint_pb2.ClusterLoadAssignment.FromString(unnamed)) == ["cluster_name"]
    cla = endpoint_pb2.ClusterLoadAssignment.FromString(named)
    assert "named_endpoints[''].address.socket_address.port_specifier" in paths(cla)


def test_message_check_guards_imply_their_checks() -> None:
    """A whole-message check's `fast` guard (the compiled walker skips the call when it
    holds) only holds when the check reports nothing."""
    import itertools

    from controlplane.translate import envoy_checks
    from controlplane.translate.constraints import wellknown

    guarded = [fn for fn in (*envoy_checks.CHECKS.values(), wellknown._duration_range,
                             wellknown._timestamp_range) if hasattr(fn, "fast")]
    assert envoy_checks.duration in guarded and wellknown._duration_range in guarded
    seconds = [-1, 0, 1, 9_223_372_035, 9_223_372_036, 315_576_000_000, 315_576_000_001,
               -315_576_000_001]
    nanos = [-1, 0, 1, 999_999_999, 1_000_000_000, -1_000_000_000]
    for fn in guarded:
        expr, consts = fn.fast
        guard = eval("lambda v: " + expr.format(v="v", **{k: f"_{k}" for k in consts}),
                     {f"_{k}": value for k, value in consts.items()})
        held = 0
        for s, n in itertools.product(seconds, nanos):
            d = duration_pb2.Duration(seconds=s, nanos=n)
            if guard(d):
                held += 1
                out: list[Violation] = []
                fn(d, "", out)
                assert out == [], (fn, s, n)
        assert held, fn


def test_clusters_are_memoised_apart_from_their_names() -> None:
    """A Cluster's checks but those of its name and eds_cluster_config are memoised by
    its bytes without those two fields (constraints/apart.py): the key is exactly that,
    and clusters that differ anywhere else are checked apart."""
    import random

    from controlplane.translate import constraints as c
    from controlplane.translate.constraints import apart, entries

    assert entries._entry(cluster_pb2.Cluster).__name__ == "run", (
        "Cluster is no longer checked apart from its name: the Cluster envoy_check "
        "changed; check it reads neither name nor eds_cluster_config, then update "
        "_APART_FINGERPRINTS")
    rng = random.Random(9)
    bases = [m for m in _golden_messages() if isinstance(m, cluster_pb2.Cluster)]
    for _ in range(300):
        m = cluster_pb2.Cluster()
        m.CopyFrom(rng.choice(bases))
        for _ in range(rng.randint(0, 3)):
            _mutate(m, rng)
        cut = cluster_pb2.Cluster()
        cut.CopyFrom(m)
        cut.ClearField("name")
        cut.ClearField("eds_cluster_config")
        # Deterministic on both sides: map fields (metadata, typed options) are written
        # in no fixed order otherwise, and two copies may differ.
        assert apart._masked(m.SerializePartialToString(deterministic=True),
                             frozenset({1, 3}), 3) == \
            cut.SerializePartialToString(deterministic=True)
    c.reset_memos()
    provided = cluster_pb2.Cluster(name="a", type=cluster_pb2.Cluster.ORIGINAL_DST,
                                   lb_policy=cluster_pb2.Cluster.CLUSTER_PROVIDED)
    provided.eds_cluster_config.service_name = "a"
    eds = cluster_pb2.Cluster()
    eds.CopyFrom(provided)
    eds.type = cluster_pb2.Cluster.EDS  # CLUSTER_PROVIDED needs a provided balancer
    unnamed = cluster_pb2.Cluster()
    unnamed.CopyFrom(provided)
    unnamed.name = ""
    unnamed.eds_cluster_config.eds_config.path_config_source.path = ""
    for m in (provided, eds, unnamed, provided, eds, unnamed):  # the second time: memoised
        assert _found(check(m)) == _found(c.check_reference(m))
    assert paths(provided) == []
    assert paths(eds) == ["lb_policy"]
    assert sorted(paths(unnamed)) == ["eds_cluster_config.eds_config.path_config_source.path",
                                      "name"]
