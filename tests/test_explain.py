"""explain's core on small hand-written config dumps: Envoy's virtual host order, route
matching (path kinds, case, headers with invert and missing values, regexes matched
whole, query parameters), the actions, TCP filter chains, the metadata it reads, and
the request parser. tests/test_explain_e2e.py holds it to a real Envoy."""

from __future__ import annotations

from typing import Any

import pytest

from controlplane.explain.dump import ConfigDump, parse_dump
from controlplane.explain.matching import (
    header_matches,
    route_mismatch,
    select_virtual_host,
    string_match,
)
from controlplane.explain.paths import PathHandling, PathOutcome, handle_path
from controlplane.explain.request import RequestError, parse_request
from controlplane.explain.walk import explain

RC = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
C1 = "outbound|80||a.default.svc.cluster.local"
C2 = "outbound|80|v2|a.default.svc.cluster.local"


def vhosts(*domain_sets: list[str]) -> list[dict[str, Any]]:
    return [{"name": f"vh{i}", "domains": d} for i, d in enumerate(domain_sets)]


@pytest.mark.parametrize(("host", "chosen", "domain"), [
    ("a.example.com", "vh0", "a.example.com"),  # exact beats every wildcard
    ("b.example.com", "vh1", "*.example.com"),  # the longest suffix wildcard
    ("x.b.example.com", "vh2", "*.b.example.com"),
    ("A.EXAMPLE.COM", "vh0", "a.example.com"),  # the Host is lowercased
    ("foo.other", "vh3", "foo.*"),  # prefix wildcards come after suffix ones
    ("foo.example.com", "vh1", "*.example.com"),  # ... even when longer
    (".example.com", "vh4", "*"),  # a wildcard's * covers at least one character
    ("elsewhere", "vh4", "*"),
])
def test_virtual_host_order(host: str, chosen: str, domain: str) -> None:
    hosts = vhosts(["a.example.com"], ["*.example.com"], ["*.b.example.com"], ["foo.*"],
                   ["*"])
    vh, matched, _ = select_virtual_host(hosts, host) or ({}, "", "")
    assert (vh.get("name"), matched) == (chosen, domain)


def test_no_virtual_host() -> None:
    assert select_virtual_host(vhosts(["a"]), "b") is None
    # the Host is folded ASCII only, as Envoy does
    assert select_virtual_host(vhosts(["é.example"]), "É.example") is None


@pytest.mark.parametrize(("matcher", "value", "matches"), [
    ({"exact": "Ab", "ignore_case": True}, "aB", True),
    ({"exact": "é", "ignore_case": True}, "É", False),  # not ASCII: not folded
    ({"prefix": "straße", "ignore_case": True}, "STRASSE", False),
    ({"suffix": "Ä", "ignore_case": True}, "xä", False),
    ({"contains": "B", "ignore_case": True}, "abc", True),
])
def test_string_match_folds_ascii_only(matcher: dict[str, Any], value: str,
                                       matches: bool) -> None:
    assert string_match(matcher, value) is matches


def req(path: str = "/", headers: tuple[str, ...] = (), method: str = "GET") -> Any:
    return parse_request(f"http://a{path}", list(headers), method)


@pytest.mark.parametrize(("match", "path", "why"), [
    ({"prefix": "/api"}, "/api/v1", None),
    ({"prefix": "/api"}, "/API", "prefix '/api' does not match path '/API'"),
    ({"prefix": "/api", "case_sensitive": False}, "/API/x", None),
    ({"path": "/x"}, "/x?y=1", None),  # the query is not part of the path
    ({"path": "/x"}, "/x/", "path '/x' does not match path '/x/'"),
    ({"safe_regex": {"regex": "/r/[0-9]+"}}, "/r/12", None),
    ({"safe_regex": {"regex": "/r/[0-9]+"}}, "/r/12/x",
     "path regex '/r/[0-9]+' does not match path '/r/12/x'"),  # matched whole
    ({"path_separated_prefix": "/p"}, "/p/x", None),
    ({"path_separated_prefix": "/p"}, "/px", "path-separated prefix '/p' does not match "
     "path '/px'"),
    ({"path": "/é"}, "/é", None),
    # case folding is ASCII only, as Envoy's
    ({"path": "/é", "case_sensitive": False}, "/É", "path '/é' (any case) does not match "
     "path '/É'"),
    ({"path": "/a/../b"}, "/a/../b", None),  # the path as given: the walk normalizes it
])
def test_path_matching(match: dict[str, Any], path: str, why: str | None) -> None:
    assert route_mismatch(match, req(path)) == why


@pytest.mark.parametrize(("matcher", "headers", "matches"), [
    ({"name": "u", "string_match": {"exact": "j"}}, ["u: j"], True),
    ({"name": "u", "string_match": {"exact": "j"}}, [], False),
    # Inverted, a missing header still fails unless treat_missing_header_as_empty
    ({"name": "u", "string_match": {"exact": "j"}, "invert_match": True}, [], False),
    ({"name": "u", "string_match": {"exact": "j"}, "invert_match": True,
      "treat_missing_header_as_empty": True}, [], True),
    ({"name": "u", "string_match": {"exact": "j"}, "invert_match": True}, ["u: k"], True),
    ({"name": "u", "present_match": True}, [], False),
    ({"name": "u", "present_match": True, "invert_match": True}, [], True),
    ({"name": "u", "present_match": True, "invert_match": True}, ["u: x"], False),
    ({"name": "u", "string_match": {"prefix": "ab"}}, ["u: abc"], True),
    ({"name": "u", "string_match": {"suffix": "bc", "ignore_case": True}}, ["u: ABC"], True),
    ({"name": "u", "string_match": {"contains": "zz"}}, ["u: abc"], False),
    ({"name": "u", "string_match": {"safe_regex": {"regex": "a.c"}}}, ["u: abc"], True),
    ({"name": "u", "string_match": {"safe_regex": {"regex": "a.c"}}}, ["u: abcd"], False),
    # a repeated header is matched as its values joined by ","
    ({"name": "u", "string_match": {"exact": "a,b"}}, ["u: a", "u: b"], True),
    ({"name": ":method", "string_match": {"exact": "POST"}}, [], False),
])
def test_header_matching(matcher: dict[str, Any], headers: list[str], matches: bool) -> None:
    assert header_matches(matcher, req("/", tuple(headers))) is matches


def test_query_parameters() -> None:
    match = {"prefix": "/", "query_parameters": [
        {"name": "v", "string_match": {"exact": "a b"}}, {"name": "p", "present_match": True}]}
    assert route_mismatch(match, req("/?v=a%20b&p")) is None
    assert route_mismatch(match, req("/?v=a%20b")) == "query p present: absent"
    assert route_mismatch(match, req("/?v=x&p=1")) == "query v is 'a b': got 'x'"


OURS = PathHandling(normalize=True)  # what translate/listeners.py sets
MERGE = PathHandling(normalize=True, merge_slashes=True)


@pytest.mark.parametrize(("handling", "raw", "outcome"), [
    (OURS, "/a/../b", PathOutcome("/b")),  # dot segments removed
    (OURS, "/a%7Eb", PathOutcome("/a~b")),  # unreserved characters decoded
    (OURS, "/a%2fb", PathOutcome("/a%2Fb")),  # other escapes kept, upper case
    (OURS, "/a//b", PathOutcome("/a//b")),  # empty segments kept: no merge_slashes
    (OURS, "//a", PathOutcome("//a")),
    (OURS, "/a//../b", PathOutcome("/a/b")),  # `..` removes the empty segment
    (OURS, "/a/./b/.", PathOutcome("/a/b/")),
    (OURS, "/a/..", PathOutcome("/")),
    (OURS, "/a\\b\\..\\c", PathOutcome("/a/c")),  # a backslash is a slash
    (OURS, "/../..", PathOutcome("/")),
    (OURS, "/p?q=/../x//y", PathOutcome("/p?q=/../x//y")),  # the query untouched
    (MERGE, "/a//b///c/", PathOutcome("/a/b/c/")),
    (MERGE, "/a/..//b?x=//", PathOutcome("/b?x=//")),
    (PathHandling(), "/a/../b//c", PathOutcome("/a/../b//c")),  # nothing set: as sent
    (PathHandling(merge_slashes=True), "/a//b", PathOutcome("/a/b")),
    (PathHandling(escaped_slashes="UNESCAPE_AND_FORWARD"), "/a%2Fb%5cc",
     PathOutcome("/a/b\\c")),  # unescaped only: no normalize_path
    (PathHandling(normalize=True, escaped_slashes="UNESCAPE_AND_FORWARD"), "/a%5cb",
     PathOutcome("/a/b")),
    (PathHandling(escaped_slashes="REJECT_REQUEST"), "/a%2fb",
     PathOutcome("/a%2fb", 400, "escaped slashes in the path are refused "
                 "(path_with_escaped_slashes_action REJECT_REQUEST)")),
    (PathHandling(escaped_slashes="REJECT_REQUEST"), "/a/b?x=%2F", PathOutcome("/a/b?x=%2F")),
    (PathHandling(normalize=True, escaped_slashes="UNESCAPE_AND_REDIRECT"), "/a/b%2F..%2Fc",
     PathOutcome("/a/c", 307, "escaped slashes in the path are redirected "
                 "(path_with_escaped_slashes_action UNESCAPE_AND_REDIRECT)")),
])
def test_path_handling(handling: PathHandling, raw: str, outcome: PathOutcome) -> None:
    assert handle_path(handling, raw) == outcome


@pytest.mark.parametrize(("hcm", "handling"), [
    ({}, PathHandling()),
    ({"normalize_path": True}, OURS),
    ({"normalize_path": {"value": True}, "merge_slashes": True}, MERGE),
    ({"path_with_escaped_slashes_action": "IMPLEMENTATION_SPECIFIC_DEFAULT"}, PathHandling()),
    ({"path_with_escaped_slashes_action": "REJECT_REQUEST"},
     PathHandling(escaped_slashes="REJECT_REQUEST")),
])
def test_path_handling_from_the_connection_manager(hcm: dict[str, Any],
                                                   handling: PathHandling) -> None:
    assert PathHandling.from_hcm(hcm) == handling


def route(name: str, match: dict[str, Any], **action: Any) -> dict[str, Any]:
    return {"name": name, "match": match, **(action or {"route": {"cluster": C1}})}


def dump(routes: list[dict[str, Any]], domains: list[str] | None = None,
         clusters: dict[str, dict[str, Any]] | None = None,
         hcm: dict[str, Any] | None = None) -> ConfigDump:
    raw = {"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
         "dynamic_listeners": [{"name": "10.0.0.1_80", "active_state": {"listener": {
             "name": "10.0.0.1_80",
             "address": {"socket_address": {"address": "10.0.0.1", "port_value": 80}},
             "default_filter_chain": {"filters": [{
                 "name": "envoy.filters.network.http_connection_manager",
                 "typed_config": {"@type": HCM, "rds": {"route_config_name": "80"},
                                  **(hcm or {})}}]}}}}]},
        {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
         "dynamic_route_configs": [{"route_config": {"@type": RC, "name": "80",
                                                     "virtual_hosts": [
             {"name": "a", "domains": domains or ["a"], "routes": routes},
             {"name": "block_all", "domains": ["*"], "routes": [
                 route("block_all", {"prefix": "/"}, direct_response={"status": 502})]}]}}]},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
         "dynamic_active_clusters": [{"cluster": {"name": n, **c}}
                                     for n, c in (clusters or {C1: {}, C2: {}}).items()]},
        {"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
         "dynamic_endpoint_configs": [{"endpoint_config": {"cluster_name": C1, "endpoints": [
             {"lb_endpoints": [
                 {"endpoint": {"address": {"socket_address": {"address": "10.1.0.1",
                                                              "port_value": 8080}}},
                  "health_status": "HEALTHY"},
                 {"endpoint": {"address": {"socket_address": {"address": "10.1.0.2",
                                                              "port_value": 8080}}},
                  "health_status": "UNHEALTHY"}]}]}}]},
    ]}
    return parse_dump(raw)


def test_first_matching_route_and_why_earlier_ones_missed() -> None:
    routes = [route("default.a.0", {"prefix": "/", "headers": [
                  {"name": "end-user", "string_match": {"exact": "jason"}}]},
                  route={"cluster": C2}),
              route("named", {"path": "/x"}, metadata={"filter_metadata": {
                  "istio": {"config": "/apis/networking.istio.io/v1/namespaces/ns/"
                                      "virtual-service/vs"},
                  "controlplane": {"rule": "spec.http[1].match[0]"}}}),
              route("default.a.2", {"prefix": "/"})]
    e = explain(dump(routes), req("/y"), {"10.1.0.1": "default/a-1"})
    assert [(s.route, s.virtual_service, s.rule, s.reason) for s in e.skipped] == [
        ("default.a.0", "default/a", "spec.http[0]", "header end-user is 'jason': absent"),
        ("named", "ns/vs", "spec.http[1].match[0]", "path '/x' does not match path '/y'")]
    assert (e.route, e.virtual_service, e.rule, e.routed) == (
        "default.a.2", "default/a", "spec.http[2]", True)
    [d] = e.destinations
    assert [(p.address, p.health, p.pod) for p in d.endpoints] == [
        ("10.1.0.1:8080", "HEALTHY", "default/a-1"), ("10.1.0.2:8080", "UNHEALTHY", "")]


def test_the_path_as_the_connection_manager_hands_it_on() -> None:
    """The walk takes the path handling from the HCM in the dump, not from a default."""
    routes = [route("b", {"path": "/a/b"}), route("rest", {"prefix": "/"},
                                                   direct_response={"status": 404})]
    ours = dump(routes, hcm={"normalize_path": True})
    e = explain(ours, req("/x/../a/b"))
    assert e.route == "b" and any("routes the path as '/a/b'" in n for n in e.notes), e
    assert explain(ours, req("/a//b")).route == "rest"  # no merge_slashes
    assert explain(dump(routes, hcm={"normalize_path": True, "merge_slashes": True}),
                   req("/a//b")).route == "b"
    assert explain(dump(routes), req("/x/../a/b")).route == "rest"  # nothing set
    refused = explain(dump(routes, hcm={"path_with_escaped_slashes_action": "REJECT_REQUEST"}),
                      req("/a%2Fb"))
    assert (refused.action, refused.status, refused.routed) == ("none", 400, False)
    moved = explain(dump(routes, hcm={"path_with_escaped_slashes_action":
                                      "UNESCAPE_AND_REDIRECT"}), req("/a%2fb?q"))
    assert (moved.status, moved.answer) == (307, "307 redirect to /a/b?q"), moved


def test_authority_keeps_the_hosts_case() -> None:
    """The virtual host is chosen by any case; :authority matchers see the Host as sent."""
    routes = [route("lower", {"prefix": "/", "headers": [
                  {"name": ":authority", "string_match": {"exact": "a"}}]}),
              route("mixed", {"prefix": "/", "headers": [
                  {"name": ":authority", "string_match": {"exact": "A"}}]}),
              route("rest", {"prefix": "/"})]
    d = dump(routes)
    for url, chosen in (("http://A/", "mixed"), ("http://a:80/", "lower"),
                        ("http://user@A:80/", "mixed")):
        e = explain(d, parse_request(url))
        assert (e.virtual_host, e.route) == ("a", chosen), (url, e)
    e = explain(d, parse_request("http://A/"))
    assert e.request["authority"] == "A" and e.request["url"] == "http://A:80/", e.request


def test_weighted_clusters_percentages_and_missing_cluster() -> None:
    routes = [route("r", {"prefix": "/"}, route={"weighted_clusters": {"clusters": [
        {"name": C1, "weight": 1}, {"name": C2, "weight": 3},
        {"name": "outbound|80||gone", "weight": 4}]}})]
    e = explain(dump(routes), req())
    assert [(d.cluster, d.percent, d.known) for d in e.destinations] == [
        (C1, 12.5, True), (C2, 37.5, True), ("outbound|80||gone", 50.0, False)]
    assert any("no cluster outbound|80||gone" in n for n in e.notes), e.notes
    assert any(f"{C2} has no endpoints" in n for n in e.notes), e.notes


def test_answers_of_the_proxy_itself() -> None:
    fault = {"envoy.filters.http.fault": {"abort": {"http_status": 503, "percentage": {
        "numerator": 1000000, "denominator": "MILLION"}}}}
    routes = [route("f", {"prefix": "/f"}, route={"cluster": C1},
                    typed_per_filter_config=fault),
              route("r", {"prefix": "/r"}, redirect={"host_redirect": "b",
                                                     "path_redirect": "/n"}),
              route("d", {"prefix": "/d"}, direct_response={
                  "status": 418, "body": {"inline_bytes": "dGVh"}})]
    d = dump(routes)
    assert (explain(d, req("/f")).action, explain(d, req("/f")).status) == ("fault_abort", 503)
    assert explain(d, req("/r")).answer == "301 redirect to http://b/n"
    assert explain(d, req("/r?q=1")).answer == "301 redirect to http://b/n?q=1"
    e = explain(d, req("/d"))
    assert (e.status, e.answer, e.routed) == (418, "418 'tea'", True)
    miss = explain(d, req("/other"))
    assert (miss.status, miss.routed) == (404, False)
    assert miss.answer == "404 (NR): no route of virtual host a matches"
    # a Host no service takes: the catch-all (REGISTRY_ONLY) answers 502, not routed
    other = explain(d, parse_request("http://elsewhere/"))
    assert (other.virtual_host, other.status, other.routed) == ("block_all", 502, False)


@pytest.mark.parametrize(("redirect", "host", "location"), [
    ({"port_redirect": 8080}, "a:80", "http://a:8080/p/x?q"),  # the port replaced
    ({"host_redirect": "b"}, "a:80", "http://b/p/x?q"),  # the whole authority replaced
    ({"prefix_rewrite": "/new", "scheme_redirect": "https"}, "a", "https://a/new/x?q"),
    ({"path_redirect": "/n?z=1"}, "a", "http://a/n?z=1"),  # its own query wins
    ({"path_redirect": "/n", "strip_query": True}, "a", "http://a/n"),
])
def test_redirect_locations(redirect: dict[str, Any], host: str, location: str) -> None:
    d = dump([route("r", {"prefix": "/p"}, redirect=redirect)], domains=[host])
    e = explain(d, parse_request("http://x/p/x?q", [f"host: {host}"]))
    assert e.answer == f"301 redirect to {location}", e.answer


def test_tcp_route_origin_from_chain_metadata() -> None:
    d = tcp_dump()
    d.listeners[0]["default_filter_chain"]["metadata"] = {"filter_metadata": {
        "istio": {"config": "/apis/networking.istio.io/v1/namespaces/d/virtual-service/db"},
        "controlplane": {"rule": "spec.tcp[0]"}}}
    e = explain(d, parse_request("tcp://db:3306"))
    assert (e.virtual_service, e.rule) == ("d/db", "spec.tcp[0]")


def test_no_listener_on_the_port() -> None:
    e = explain(dump([]), parse_request("http://a:81/"))
    assert (e.action, e.routed) == ("none", False)
    assert e.verdict == "no listener on port 81: the connection is refused"


def test_cluster_policies_name_their_level() -> None:
    clusters = {C1: {"lb_policy": "LEAST_REQUEST", "outlier_detection": {
        "consecutive_5xx": 7}, "circuit_breakers": {"thresholds": [
            {"max_connections": 5, "max_requests": 4294967295}]},
        "metadata": {"filter_metadata": {
            "istio": {"config": "/apis/networking.istio.io/v1/namespaces/d/"
                                "destination-rule/r"},
            "controlplane": {"policy": {"loadBalancer": "trafficPolicy",
                                        "outlierDetection": "subsets[0].trafficPolicy",
                                        "connectionPool":
                                            "trafficPolicy.portLevelSettings[0]"}}}}}}
    [d] = explain(dump([route("r", {"prefix": "/"})], clusters=clusters), req()).destinations
    assert d.destination_rule == "d/r"
    assert [(p.name, p.value, p.source) for p in d.policies] == [
        ("load balancer", "LEAST_REQUEST", "trafficPolicy"),
        ("circuit breakers", "max_connections=5", "trafficPolicy.portLevelSettings[0]"),
        ("outlier detection", "consecutive_5xx=7", "subsets[0].trafficPolicy")]


def tcp_dump() -> ConfigDump:
    def chain(cluster: str, match: dict[str, Any] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"filters": [{"name": "envoy.filters.network.tcp_proxy",
                                            "typed_config": {"@type": TCP,
                                                             "stat_prefix": cluster,
                                                             "cluster": cluster}}]}
        if match:
            out["filter_chain_match"] = match
        return out
    return parse_dump({"configs": [{
        "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
        "dynamic_listeners": [{"active_state": {"listener": {
            "name": "10.0.0.1_3306",
            "address": {"socket_address": {"address": "10.0.0.1", "port_value": 3306}},
            "default_filter_chain": chain("outbound|3306||db"),
            "filter_chains": [
                chain("outbound|3306||other", {"prefix_ranges": [
                    {"address_prefix": "10.96.0.7", "prefix_len": 32}]}),
                chain("outbound|3306||tls-a", {"server_names": ["a.example.com"],
                                              "transport_protocol": "tls"}),
                chain("outbound|3306||tls-any", {"server_names": ["*.example.com"],
                                                "transport_protocol": "tls"})]}}}]}]})


@pytest.mark.parametrize(("url", "sni", "cluster"), [
    ("tcp://db:3306", "", "outbound|3306||db"),  # the listener's own address: default
    ("tcp://10.96.0.7:3306", "", "outbound|3306||other"),  # by destination IP
    ("tls://a.example.com:3306", "", "outbound|3306||tls-a"),  # an exact SNI
    ("tls://b.example.com:3306", "", "outbound|3306||tls-any"),  # a wildcard SNI
    ("tls://x:3306", "c.example.com", "outbound|3306||tls-any"),  # --sni
])
def test_tcp_filter_chains(url: str, sni: str, cluster: str) -> None:
    e = explain(tcp_dump(), parse_request(url, sni=sni))
    assert e.action == "tcp_proxy" and [d.cluster for d in e.destinations] == [cluster], e


@pytest.mark.parametrize(("url", "headers", "error"), [
    ("ftp://a/", [], "the scheme must be http, tcp or tls"),
    ("tcp://a", [], "a tcp URL needs a port"),
    ("http://a/", ["no-colon"], "write it as 'name: value'"),
])
def test_bad_requests(url: str, headers: list[str], error: str) -> None:
    with pytest.raises(RequestError, match=error):
        parse_request(url, headers)


def test_request_authority_and_headers() -> None:
    r = parse_request("http://reviews:9080/p?q=1", ["End-User: jason", ":authority: x:1"],
                      "post")
    assert (r.authority, r.method, r.header("end-user"), r.path) == (
        "x:1", "POST", "jason", "/p?q=1")
    assert parse_request("http://reviews/").authority == "reviews"
    assert parse_request("http://reviews:9080/").authority == "reviews:9080"
    assert parse_request("http://a/", ["Host: b"]).authority == "b"
    assert parse_request("http://Reviews:9080/").authority == "Reviews:9080"  # case kept
    assert parse_request("http://[FE80::1]:8080/").authority == "[FE80::1]:8080"


def test_delegate_origin_from_route_metadata() -> None:
    routes = [route("r", {"prefix": "/"}, metadata={"filter_metadata": {
        "istio": {"config": "/apis/networking.istio.io/v1/namespaces/d/virtual-service/root"},
        "controlplane": {"rule": "spec.http[1]", "delegate": "team/leaf spec.http[0]"}}})]
    e = explain(dump(routes), req())
    assert (e.virtual_service, e.rule, e.delegate) == ("d/root", "spec.http[1]",
                                                       "team/leaf spec.http[0]")


@pytest.mark.parametrize(("argv", "error"), [
    (["explain", "--proxy", "p", "ftp://a/"], "the scheme must be http, tcp or tls"),
    (["explain", "http://a/"], "give --proxy NODE"),
    (["explain", "--proxy", "p", "--server", "127.0.0.1:1", "http://a/"], "127.0.0.1:1"),
])
def test_command_input_errors_exit_2(argv: list[str], error: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from controlplane import cli
    from controlplane import log as logsetup

    try:
        assert cli.main(argv) == 2
    finally:
        logsetup.configure("warning", cache=False)
    assert error in capsys.readouterr().err
