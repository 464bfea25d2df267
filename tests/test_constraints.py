"""The constraint checker (translate/constraints.py, translate/envoy_checks.py): each PGV
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
from envoy.config.endpoint.v3 import endpoint_components_pb2
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
    ("[0-9]{200}", "program size 204"),
    ("a{97}", "program size 101"),
])
def test_regexes_envoy_rejects(regex: str, why: str) -> None:
    r = rc.Route(match=rc.RouteMatch(safe_regex={"regex": regex}), route={"cluster": "c"})
    [v] = check(r)
    assert v.path == "match.safe_regex.regex" and why in v.message


def test_regex_limits_match_envoy_program_sizes() -> None:
    assert regex_error("a{96}") is None  # size 100: exactly Envoy's limit
    assert regex_error(".{30}") is None  # Envoy counts 64 here, not UTF-8's 244
    assert regex_error("(?i)/users/[0-9]+/profile") is None
    empty = rc.Route(match=rc.RouteMatch(safe_regex={"regex": ""}), route={"cluster": "c"})
    [v] = check(empty)
    assert v.path == "match.safe_regex.regex" and "min_len" in v.message


def test_regex_rewrite_pattern_is_checked() -> None:
    r = route()
    r.route.regex_rewrite.pattern.regex = "[0-9]{200}"
    r.route.regex_rewrite.substitution = "/"
    assert paths(r) == ["route.regex_rewrite.pattern.regex"]


def test_istio_regex_check_uses_envoys_rules() -> None:
    errs = Errors()
    check_regex("[0-9]{200}", "spec.http[0].match[0].uri.regex", errs)
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


# (name, the edit Envoy rejects, the same edit fixed)
AGREEMENT = [
    ("regex-extended-flag", _set_regex("(?x)/a b"), _set_regex("/ab")),
    ("regex-backslash-Z", _set_regex(r"/a\Z"), _set_regex("/a$")),
    ("regex-repeat-1001", _set_regex("/a{1001}"), _set_regex("/a{10}")),
    ("regex-program-size", _set_regex("/[0-9]{200}"), _set_regex("/[0-9]+")),
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
        out, _ = translate_case("basic")
        edit(out)
        found = [v for ms in out.values() for m in ms for v in check(m)]
        accepted, log = _envoy_accepts(out, tmp_path, f"{name}-{should_pass}")
        assert accepted is should_pass, log
        assert (not found) is should_pass, found
