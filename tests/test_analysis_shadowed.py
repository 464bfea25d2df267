"""The shadowed-route decision (analysis/shadow.py) case by case, and its check's
findings (CP0110 UnreachableRoute, CP0111 IneffectiveMatch) from the smallest YAML."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from controlplane.analysis import shadow
from controlplane.analysis.checks import CHECKS, shadowed
from controlplane.analysis.checks.shadowed import check
from controlplane.analysis.inputs import Inputs
from controlplane.analysis.shadow import Outcome, RouteVerdict, Space, decide
from controlplane.model.istio_common import StringMatch
from controlplane.model.mesh import build_mesh
from controlplane.model.meta import Key
from controlplane.model.parse import key_of, parse_object
from controlplane.model.virtual_service import HTTPMatch, HTTPRoute


def S(kind: str, value: str) -> StringMatch:
    return StringMatch(kind, value)


def route(*matches: HTTPMatch) -> HTTPRoute:
    return HTTPRoute(name="", matches=matches)


def uri(kind: str, value: str, **kw: Any) -> HTTPMatch:
    return HTTPMatch(uri=S(kind, value), **kw)


ANY = Space()


def outcomes(*routes: HTTPRoute, space: Space = ANY) -> list[str]:
    return [v.outcome.value for v in decide(routes, space)]


def verdict(*routes: HTTPRoute, space: Space = ANY) -> RouteVerdict:
    """The last route's verdict."""
    return decide(routes, space)[-1]


C, R, U = "covered", "reachable", "unknown"


# -- paths ---------------------------------------------------------------------------------

def test_a_prefix_is_covered_by_a_shorter_prefix_and_an_exact_by_a_prefix() -> None:
    assert outcomes(route(uri("prefix", "/a")), route(uri("prefix", "/ab")),
                    route(uri("exact", "/a/b"))) == [R, C, C]
    v = verdict(route(uri("prefix", "/a")), route(uri("prefix", "/ab")))
    assert v.covered_by == ((0, 0),)


def test_near_misses_are_reachable_with_a_witness_outside_the_earlier_matches() -> None:
    # "/ab" does not cover "/a"; "/a" exact does not cover "/a" prefix.
    v = verdict(route(uri("prefix", "/ab")), route(uri("prefix", "/a")))
    assert v.outcome is Outcome.REACHABLE and v.witness is not None
    assert v.witness.path.startswith("/a") and not v.witness.path.startswith("/ab")
    v = verdict(route(uri("exact", "/a")), route(uri("prefix", "/a")))
    assert v.outcome is Outcome.REACHABLE and v.witness is not None
    assert v.witness.path != "/a"


def test_a_route_without_matches_covers_everything_after_it() -> None:
    assert outcomes(route(), route(uri("prefix", "/x")), route()) == [R, C, C]


def test_a_union_of_earlier_prefixes_covers_what_none_covers_alone() -> None:
    # Every path starts with "/": "/" exact plus a prefix per possible next character
    # is not a cover (there are more characters), but "/" prefix split two ways is.
    x = (("x", None),)
    assert outcomes(route(uri("prefix", "/a", headers=x)),
                    route(uri("prefix", "/a", without_headers=x)),
                    route(uri("prefix", "/a"))) == [R, R, C]
    v = verdict(route(uri("prefix", "/a", headers=x)),
                route(uri("prefix", "/a", without_headers=x)),
                route(uri("exact", "/a")), route(uri("prefix", "/a")))
    assert v.outcome is Outcome.COVERED and v.covered_by == ((0, 0), (1, 0))


def test_ignore_uri_case() -> None:
    folded = uri("prefix", "/A", ignore_uri_case=True)
    assert outcomes(route(folded), route(uri("prefix", "/a"))) == [R, C]
    assert outcomes(route(folded), route(uri("exact", "/aBc", ignore_uri_case=True))) == [R, C]
    # Case-sensitive "/a" does not cover "/A" in any case.
    v = verdict(route(uri("prefix", "/a")), route(folded))
    assert v.outcome is Outcome.REACHABLE and v.witness is not None
    assert v.witness.path.lower().startswith("/a") and not v.witness.path.startswith("/a")


def test_case_sensitive_and_insensitive_paths_mixed_are_decided_exactly() -> None:
    folded = uri("prefix", "/a", ignore_uri_case=True)
    # "/a" and "/A" as written together take every case of "/a...".
    assert outcomes(route(uri("prefix", "/a")), route(uri("prefix", "/A")),
                    route(folded)) == [R, R, C]
    v = verdict(route(uri("prefix", "/a")), route(uri("prefix", "/Ab")), route(folded))
    assert v.outcome is Outcome.REACHABLE and v.witness is not None
    assert v.witness.path.startswith("/A") and not v.witness.path.startswith("/Ab")
    assert outcomes(route(folded), route(uri("exact", "/AB"))) == [R, C]


def test_a_path_no_request_has_makes_a_route_that_matches_nothing() -> None:
    v = verdict(route(uri("prefix", "/")), route(uri("exact", "no-slash")))
    assert v.outcome is Outcome.COVERED


# -- headers, method, authority, query, port -----------------------------------------------

def test_header_sets_that_include_each_other() -> None:
    one = HTTPMatch(headers=(("x", S("exact", "1")),))
    both = HTTPMatch(headers=(("x", S("exact", "1")), ("y", S("prefix", "a"))))
    assert outcomes(route(one), route(both)) == [R, C]
    v = verdict(route(both), route(one))  # the larger set first: "1" without y gets by
    assert v.outcome is Outcome.REACHABLE and v.witness is not None
    assert ("x", "1") in v.witness.headers and not any(h == "y" and val.startswith("a")
                                                       for h, val in v.witness.headers)


def test_present_covers_any_value_and_exact_values_do_not_cover_present() -> None:
    present = HTTPMatch(headers=(("x", None),))
    assert outcomes(route(present), route(HTTPMatch(headers=(("x", S("prefix", "v")),)))
                    ) == [R, C]
    assert outcomes(route(HTTPMatch(headers=(("x", S("exact", "1")),))),
                    route(HTTPMatch(headers=(("x", S("prefix", "a")),))), route(present)
                    )[-1] == R


def test_without_headers_follow_envoys_inverted_matches() -> None:
    # Inverted presence matches a missing header; an inverted value match does not.
    absent = HTTPMatch(without_headers=(("x", None),))
    not_one = HTTPMatch(without_headers=(("x", S("exact", "1")),))
    one = HTTPMatch(headers=(("x", S("exact", "1")),))
    assert outcomes(route(absent), route(not_one), route(one), route()) == [R, R, R, C]
    assert outcomes(route(not_one), route(one), route()) == [R, R, R]  # x missing: neither
    v = verdict(route(not_one), route(one), route())
    assert v.witness is not None and not any(h == "x" for h, _ in v.witness.headers)


def test_method_and_authority() -> None:
    get = HTTPMatch(method=S("exact", "GET"))
    assert outcomes(route(get), route(HTTPMatch(method=S("exact", "GET"),
                                                uri=S("prefix", "/a")))) == [R, C]
    v = verdict(route(get), route(HTTPMatch(method=S("prefix", "G"))))
    assert v.outcome is Outcome.REACHABLE and v.witness is not None
    assert v.witness.method.startswith("G") and v.witness.method != "GET"
    # Envoy picks the virtual host case-insensitively but matches `:authority` as
    # sent: "WEB" reaches the host and passes a prefix every lowercase name starts with.
    space = Space(ports=(80,), authorities=("web.default.svc.cluster.local", "web",
                                            "web:80"))
    v = verdict(route(HTTPMatch(authority=S("prefix", "web"))), route(), space=space)
    assert v.outcome is Outcome.REACHABLE and v.witness is not None
    assert v.witness.authority.lower() in space.authorities
    assert not v.witness.authority.startswith("web")
    assert outcomes(route(HTTPMatch(authority=S("exact", "web"))), route(),
                    space=space) == [R, R]
    # Still finite: a case-insensitive cover of every spelling is decided exactly.
    assert outcomes(route(HTTPMatch(authority=S("regex", "(?i)web.*"))), route(),
                    space=space)[0] == R
    assert outcomes(route(HTTPMatch(authority=S("prefix", "web"))),
                    route(HTTPMatch(authority=S("exact", "Web:80"))), route(),
                    space=space) == [R, R, R]
    # A spelling no name folds to never reaches this host.
    assert outcomes(route(HTTPMatch(authority=S("exact", "other"))), space=space) == [C]


def test_query_params() -> None:
    present = HTTPMatch(query_params=(("q", None),))
    assert outcomes(route(present), route(HTTPMatch(query_params=(("q", S("exact", "1")),)))
                    ) == [R, C]
    # An empty exact value is a presence check (as translated).
    assert outcomes(route(HTTPMatch(query_params=(("q", S("exact", "")),))),
                    route(HTTPMatch(query_params=(("q", S("regex", "[0-9]+")),)))) == [R, C]
    v = verdict(route(HTTPMatch(query_params=(("q", S("exact", "1")),))), route(present))
    assert v.witness is not None and v.witness.query and v.witness.query[0][1] != "1"


def test_ports_split_the_routes_per_listener() -> None:
    space = Space(ports=(80, 81))
    on80, on81 = HTTPMatch(port=80), HTTPMatch(port=81)
    assert outcomes(route(on80), route(on81), route(), space=space) == [R, R, C]
    v = verdict(route(on80), route(), space=space)
    assert v.witness is not None and v.witness.port == 81
    # A port the host does not have: the match is never emitted.
    assert outcomes(route(), route(HTTPMatch(port=9)), space=space) == [R, C]
    assert verdict(route(HTTPMatch(port=9)), route(), space=space).outcome is Outcome.REACHABLE


def test_source_labels_cover_only_clients_they_select() -> None:
    app_a = frozenset({("app", "a")})
    app_a_v1 = frozenset({("app", "a"), ("v", "1")})
    assert outcomes(route(HTTPMatch(source_labels=app_a)),
                    route(HTTPMatch(source_labels=app_a_v1))) == [R, C]
    assert outcomes(route(HTTPMatch(source_labels=app_a_v1)),
                    route(HTTPMatch(source_labels=app_a))) == [R, R]
    assert outcomes(route(HTTPMatch(source_labels=app_a)), route()) == [R, R]
    assert outcomes(route(HTTPMatch(source_namespace="x")),
                    route(HTTPMatch(source_namespace="x", uri=S("prefix", "/a")))) == [R, C]
    assert outcomes(route(HTTPMatch(source_namespace="x")), route()) == [R, R]
    # A match only gateways take covers nothing for sidecars.
    gw = HTTPMatch(gateways=("ingress",))
    assert [v.route for v in decide([route(gw), route()])] == [1]
    assert verdict(route(gw), route()).outcome is Outcome.REACHABLE


def test_regex_is_exact_on_a_pinned_value_and_sound_otherwise() -> None:
    rx = uri("regex", "/a[0-9]+")
    assert outcomes(route(rx), route(uri("exact", "/a12"))) == [R, C]
    assert outcomes(route(rx), route(uri("exact", "/a1x"))) == [R, R]
    assert outcomes(route(rx), route(uri("regex", "/a[0-9]+"))) == [R, C]  # the same
    # "/a" prefix does cover "/a[0-9]+", but proving it needs regex inclusion: unknown,
    # never a wrong "covered".
    assert outcomes(route(uri("prefix", "/a")), route(rx)) == [R, U]
    # And reachable ones are found by sampling the regex.
    v = verdict(route(uri("prefix", "/b")), route(rx))
    assert v.outcome is Outcome.REACHABLE and v.witness is not None
    assert v.witness.path.startswith("/a")


def test_a_regex_that_is_a_plain_prefix_or_string_is_decided_as_one() -> None:
    assert outcomes(route(uri("regex", "/api/.*")), route(uri("prefix", "/api/v1"))) == [R, C]
    assert outcomes(route(uri("prefix", "/api")), route(uri("regex", "^/api/v1.*$"))) == [R, C]
    assert outcomes(route(uri("regex", "/a")), route(uri("exact", "/a"))) == [R, C]
    near = verdict(route(uri("regex", "/api/.*")), route(uri("prefix", "/api")))
    assert near.witness is not None and not near.witness.path.startswith("/api/")
    # A header regex ".*" takes any value, but not a missing header.
    assert outcomes(route(HTTPMatch(headers=(("x", S("regex", ".*")),))),
                    route(HTTPMatch(headers=(("x", S("exact", "1")),))), route()) == [R, C, R]


def test_ineffective_match_and_its_witness_from_the_other_match() -> None:
    v = verdict(route(uri("prefix", "/a")), route(uri("exact", "/a/b"), uri("prefix", "/c")))
    assert v.outcome is Outcome.REACHABLE
    assert [(m.match, m.covered_by) for m in v.ineffective] == [(0, ((0, 0),))]
    assert v.witness is not None and v.witness.path.startswith("/c")


# -- the check -----------------------------------------------------------------------------

def _inputs(text: str) -> Inputs:
    objects = {}
    for raw in yaml.safe_load_all(text):
        obj = parse_object(raw)
        objects[key_of(obj)] = obj
    return Inputs(build_mesh(objects), objects)


SERVICE = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
"""


def _vs(http: str, name: str = "web", extra: str = "") -> str:
    return SERVICE + f"""
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [web]
  http: {http}
""" + extra


def _delegate(http: str) -> str:
    """The delegate team/api (no hosts), its `http` list as written."""
    return f"""
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: api, namespace: team}}
spec:
  http:{http}
"""


def _found(text: str) -> list[tuple[str, Key, str]]:
    return [(f.code.code, f.object, f.path) for f in check(_inputs(text))]


WEB = Key("VirtualService", "default", "web")
DIRECT = "directResponse: {status: 200}"


def test_the_check_is_registered() -> None:
    assert check in CHECKS


def test_cp0110_an_unreachable_route_names_what_covers_it() -> None:
    text = _vs(f"""
  - {{match: [{{uri: {{prefix: /a}}}}], {DIRECT}}}
  - {{match: [{{uri: {{prefix: /a/b}}}}], {DIRECT}}}""")
    [finding] = check(_inputs(text))
    assert (finding.code.code, finding.object, finding.path) == ("CP0110", WEB, "spec.http[1]")
    assert finding.code.istio == "IST0130"
    assert "spec.http[0].match[0]" in finding.message
    assert finding.fix == "move it before spec.http[0] or narrow the earlier match"
    # Near miss: the longer prefix first.
    assert _found(_vs(f"""
  - {{match: [{{uri: {{prefix: /a/b}}}}], {DIRECT}}}
  - {{match: [{{uri: {{prefix: /a}}}}], {DIRECT}}}""")) == []


def test_cp0110_a_union_cover_names_every_covering_match() -> None:
    [finding] = check(_inputs(_vs(f"""
  - {{match: [{{uri: {{prefix: /a}}, headers: {{x: {{}}}}}}], {DIRECT}}}
  - {{match: [{{uri: {{prefix: /a}}, withoutHeaders: {{x: {{}}}}}}], {DIRECT}}}
  - {{match: [{{uri: {{prefix: /a/b}}}}], {DIRECT}}}""")))
    assert finding.path == "spec.http[2]"
    assert "spec.http[0].match[0] and spec.http[1].match[0] together cover" in \
        finding.message


def test_cp0111_an_ineffective_match() -> None:
    text = _vs(f"""
  - {{match: [{{uri: {{prefix: /a}}}}], {DIRECT}}}
  - {{match: [{{uri: {{prefix: /b}}}}, {{uri: {{exact: /a/x}}}}], {DIRECT}}}""")
    [finding] = check(_inputs(text))
    assert (finding.code.code, finding.object, finding.path) == \
        ("CP0111", WEB, "spec.http[1].match[1]")
    assert finding.code.istio == "IST0131"
    assert "spec.http[0].match[0]" in finding.message
    assert _found(_vs(f"""
  - {{match: [{{uri: {{prefix: /a}}}}], {DIRECT}}}
  - {{match: [{{uri: {{prefix: /b}}}}, {{uri: {{exact: /c/x}}}}], {DIRECT}}}""")) == []


def test_a_route_merged_from_a_delegate_is_reported_on_the_delegate() -> None:
    text = _vs(f"""
  - {{match: [{{uri: {{prefix: /api}}}}], delegate: {{name: api, namespace: team}}}}
  - {{{DIRECT}}}""", extra=_delegate(f"""
  - {{match: [{{uri: {{prefix: /api/v2}}}}], {DIRECT}}}
  - {{{DIRECT}}}
  - {{match: [{{uri: {{prefix: /api/v1/x}}}}], {DIRECT}}}"""))
    found = _found(text)
    assert found == [("CP0110", Key("VirtualService", "team", "api"), "spec.http[2]")]
    [finding] = check(_inputs(text))
    # Its cover is the delegate's own second route, merged under the root's match.
    assert "VirtualService default/web spec.http[0].match[0]" in finding.message


def _two_roots(b_first: str) -> str:
    """Roots web and ratings, both delegating to team/api; web first matches /api."""
    ratings = SERVICE.replace("name: web", "name: ratings")
    return ratings + _vs(f"""
  - {{match: [{{uri: {{prefix: /api}}}}], {DIRECT}}}
  - {{delegate: {{name: api, namespace: team}}}}""", extra=f"""
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings]
  http:{b_first}
  - {{delegate: {{name: api, namespace: team}}}}""" + _delegate(f"""
  - {{match: [{{uri: {{prefix: /api/v2}}}}, {{uri: {{prefix: /x}}}}], {DIRECT}}}
  - {{match: [{{uri: {{prefix: /api/v3}}}}], {DIRECT}}}
  - {{{DIRECT}}}"""))


API = Key("VirtualService", "team", "api")
RATINGS = Key("VirtualService", "default", "ratings")


def test_a_delegate_shared_by_two_roots_is_reported_only_if_dead_under_both() -> None:
    # Under ratings, nothing hides api's routes: web's /api match alone says nothing
    # about the delegate (its author cannot fix web's order).
    assert _found(_two_roots("")) == []
    # ratings hides /api/v3 too: api's http[1] is dead under both roots.
    text = _two_roots(f"""
  - {{match: [{{uri: {{prefix: /api/v3}}}}], {DIRECT}}}""")
    found = list(check(_inputs(text)))
    assert [(f.code.code, f.object, f.path) for f in found] == \
        [("CP0110", API, "spec.http[1]")]
    [finding] = found
    # One finding for both roots, naming each.
    assert "default/ratings spec.http[0].match[0]" in finding.message
    assert "default/web" in finding.message.split("likewise under")[1]
    # The same match dead under both roots is ineffective; the route still lives (/x).
    assert _found(_two_roots(f"""
  - {{match: [{{uri: {{prefix: /api/v2}}}}], {DIRECT}}}""")) == \
        [("CP0111", API, "spec.http[0].match[0]")]


def test_a_replay_that_disagrees_with_the_mesh_names_no_index(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The merged list is longer than the root's spec.http: its indexes are not the
    # object's, so the finding names the route list only.
    text = _vs(f"""
  - {{match: [{{uri: {{prefix: /api}}}}], delegate: {{name: api, namespace: team}}}}
  - {{{DIRECT}}}""", extra=_delegate(f"""
  - {{{DIRECT}}}
  - {{match: [{{uri: {{prefix: /api/v1/x}}}}], {DIRECT}}}"""))
    monkeypatch.setattr(shadowed, "merge_route", lambda *_: None)
    assert _found(text) == [("CP0110", WEB, "spec.http")]  # not spec.http[1]: live


def test_the_authority_is_any_case_spelling_of_the_hosts_names() -> None:
    # Envoy picks the virtual host on the lowercased Host but matches `authority:` as
    # sent: "REVIEWS" passes neither match and reaches the catch-all, "Reviews:9080"
    # the second route (both checked on a real Envoy).
    reviews = """
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - match: [{authority: {prefix: reviews}}]
    route: [{destination: {host: reviews}}]
  - match: [{authority: {exact: "Reviews:9080"}}]
    route: [{destination: {host: reviews}}]
  - route: [{destination: {host: reviews}}]
"""
    assert _found(reviews) == []
    # A spelling that reaches another host only still makes its route dead here.
    assert _found(reviews.replace('"Reviews:9080"', '"ratings"')) == \
        [("CP0110", Key("VirtualService", "shop", "reviews"), "spec.http[1]")]


def test_the_check_reads_ports_from_the_service() -> None:
    # Port 80 is the only HTTP port: a match on it covers everything after.
    assert [c for c, _, _ in _found(_vs(f"""
  - {{match: [{{port: 80}}], {DIRECT}}}
  - {{{DIRECT}}}"""))] == ["CP0110"]


def test_the_check_decides_per_port_and_per_client() -> None:
    two_ports = SERVICE.replace("[{name: http, port: 80}]",
                                "[{name: http, port: 80}, {name: http-alt, port: 81}]")
    text = two_ports + _vs(f"""
  - {{match: [{{port: 80}}], {DIRECT}}}
  - {{{DIRECT}}}""")[len(SERVICE):]
    assert _found(text) == []  # port 81 still reaches the second route
    # An earlier match for some clients only leaves the route to the others.
    assert _found(_vs(f"""
  - {{match: [{{sourceLabels: {{app: a}}}}], {DIRECT}}}
  - {{{DIRECT}}}""")) == []
    assert [c for c, _, _ in _found(_vs(f"""
  - {{match: [{{sourceLabels: {{app: a}}}}], {DIRECT}}}
  - {{match: [{{sourceLabels: {{app: a, v: "1"}}}}], {DIRECT}}}"""))] == ["CP0110"]


def test_a_match_for_a_port_the_host_lacks_is_ineffective() -> None:
    [finding] = check(_inputs(_vs(f"""
  - {{match: [{{port: 80}}, {{port: 9090}}], {DIRECT}}}""")))
    assert (finding.code.code, finding.path) == ("CP0111", "spec.http[0].match[1]")
    assert "no request this host receives meets it" in finding.message


def test_past_its_step_budget_the_search_says_unknown_not_covered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Eight headers, each present or absent above: 256 cells, all covered.
    names = [f"h{i}" for i in range(8)]
    earlier = [route(HTTPMatch(headers=tuple((n, None) for n in names[:k]),
                               without_headers=((names[k], None),)))
               for k in range(8)]
    earlier.append(route(HTTPMatch(headers=tuple((n, None) for n in names))))
    assert outcomes(*earlier, route())[-1] == C
    monkeypatch.setattr(shadow, "_BUDGET", 20)
    assert outcomes(*earlier, route())[-1] == U
