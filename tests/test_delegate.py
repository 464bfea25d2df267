"""VirtualService delegation (model/delegate.py): how a root route and its delegate's
routes merge, what is left out and reported, and that merged routes keep their origin."""

from __future__ import annotations

from typing import Any

from controlplane.model.delegate import merge_delegates, merge_matches
from controlplane.model.istio_common import StringMatch
from controlplane.model.mesh import Mesh, build_mesh
from controlplane.model.meta import Key
from controlplane.model.parse import key_of, parse_object
from controlplane.model.virtual_service import HTTPMatch, VirtualService
from controlplane.translate import route_suspects


def _service(name: str, ns: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]}}


def _vs(name: str, ns: str, http: list[dict[str, Any]], hosts: list[str] | None = None,
        **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": ns},
            "spec": {**({"hosts": hosts} if hosts else {}), "http": http, **spec}}


def _mesh(*docs: dict[str, Any]) -> Mesh:
    objs = [parse_object(d) for d in docs]
    return build_mesh({key_of(o): o for o in objs})


def _root(delegate: dict[str, Any], **route: Any) -> dict[str, Any]:
    return _vs("root", "default", [{"name": "root", "delegate": delegate, **route}],
               hosts=["web"])


def _prefix(value: str, **kw: Any) -> HTTPMatch:
    return HTTPMatch(uri=StringMatch("prefix", value), **kw)


def _exact(value: str) -> HTTPMatch:
    return HTTPMatch(uri=StringMatch("exact", value))


def test_a_delegate_match_must_lie_within_the_root_match() -> None:
    root = (_prefix("/api"),)
    assert merge_matches(root, (_prefix("/api/v2"),)) == (_prefix("/api/v2"),)
    assert merge_matches(root, (_exact("/api/x"),)) == (_exact("/api/x"),)
    assert merge_matches(root, (_prefix("/other"),)) is None
    assert merge_matches((_exact("/a"),), (_prefix("/a"),)) is None
    regex = HTTPMatch(uri=StringMatch("regex", "/a.*"))
    assert merge_matches((regex,), (_prefix("/a"),)) is None
    assert merge_matches(root, (regex,)) is None


def test_an_empty_side_takes_the_other_and_fields_combine() -> None:
    root = (_prefix("/api", headers=(("x-team", StringMatch("exact", "a")),), name="r"),)
    leaf = (HTTPMatch(method=StringMatch("exact", "GET"), port=80, name="l",
                      headers=(("x-user", StringMatch("exact", "u")),)),)
    assert merge_matches((), leaf) == leaf
    assert merge_matches(root, ()) == root
    merged = merge_matches(root, leaf)
    assert merged == (HTTPMatch(uri=StringMatch("prefix", "/api"),
                                method=StringMatch("exact", "GET"), port=80, name="r-l",
                                headers=(("x-team", StringMatch("exact", "a")),
                                         ("x-user", StringMatch("exact", "u")))),)


def test_contradicting_headers_ports_and_case_are_conflicts() -> None:
    root = (_prefix("/", headers=(("x", StringMatch("exact", "1")),), port=80),)
    assert merge_matches(root, (HTTPMatch(headers=(("x", StringMatch("exact", "2")),)),)) \
        is None
    assert merge_matches(root, (HTTPMatch(port=81),)) is None
    assert merge_matches(root, (HTTPMatch(ignore_uri_case=True),)) is None
    # A delegate match fitting one of several root matches keeps only that pairing.
    roots = (_prefix("/a"), _prefix("/b"))
    assert merge_matches(roots, (_prefix("/b/c"),)) == (_prefix("/b/c"),)


def test_merged_routes_inherit_unset_fields_resolve_in_their_namespace_and_keep_origin(
) -> None:
    mesh = _mesh(
        _service("web", "default"), _service("api", "team"),
        _root({"name": "d", "namespace": "team"}, match=[{"uri": {"prefix": "/api"}}],
              timeout="5s", retries={"attempts": 4}),
        _vs("d", "team", [{"name": "v2", "match": [{"uri": {"prefix": "/api/v2"}}],
                           "timeout": "1s", "route": [{"destination": {"host": "api"}}]}]))
    vs = mesh.virtual_services["web.default.svc.cluster.local"]
    assert len(vs.http) == 1
    route = vs.http[0]
    assert route.name == "root-v2"
    assert route.timeout == 1.0  # its own
    assert route.retries is not None and route.retries.attempts == 4  # the root's
    assert route.route[0].destination.host == "api.team.svc.cluster.local"
    assert route.origin == Key("VirtualService", "team", "d")
    assert route.delegate is None
    assert mesh.problems == ()
    suspects = route_suspects(mesh, mesh.services["web.default.svc.cluster.local"])
    assert suspects[:2] == (Key("VirtualService", "default", "root"),
                            Key("VirtualService", "team", "d"))


def test_a_missing_or_hidden_delegate_leaves_the_root_route_out_and_is_reported() -> None:
    fallback = {"route": [{"destination": {"host": "web"}}]}
    root = _vs("root", "default", [{"delegate": {"name": "none"}},
                                   {"delegate": {"name": "private", "namespace": "team"}},
                                   {"delegate": {"name": "has-hosts"}}, fallback],
               hosts=["web"])
    mesh = _mesh(_service("web", "default"), root,
                 _vs("private", "team", [fallback], exportTo=["."]),
                 _vs("has-hosts", "default", [fallback], hosts=["other"]))
    vs = mesh.virtual_services["web.default.svc.cluster.local"]
    assert [r.origin for r in vs.http] == [None]  # only the root's own route is left
    problems = "\n".join(mesh.problems)
    assert "spec.http[0].delegate: no delegate VirtualService default/none" in problems
    assert "VirtualService team/private is not exported to namespace default" in problems
    assert "no delegate VirtualService default/has-hosts" in problems


def test_a_delegate_exported_to_the_root_namespace_is_used() -> None:
    mesh = _mesh(_service("web", "default"), _root({"name": "d", "namespace": "team"}),
                 _vs("d", "team", [{"route": [{"destination": {"host": "web.default"}}]}],
                     exportTo=["default"]))
    vs = mesh.virtual_services["web.default.svc.cluster.local"]
    assert [r.route[0].destination.host for r in vs.http] == ["web.default.svc.cluster.local"]
    assert mesh.problems == ()


def test_a_delegate_alone_routes_nothing() -> None:
    mesh = _mesh(_service("web", "default"),
                 _vs("d", "default", [{"route": [{"destination": {"host": "web"}}]}]))
    assert mesh.virtual_services == {}
    assert mesh.problems == ()


def test_without_export_to_the_mesh_default_decides() -> None:
    objs = [parse_object(d) for d in (
        _service("web", "default"), _root({"name": "d", "namespace": "team"}),
        _vs("d", "team", [{"route": [{"destination": {"host": "web.default"}}]}]))]
    delegates = {(o.meta.namespace, o.meta.name): o for o in objs
                 if isinstance(o, VirtualService) and o.is_delegate}
    root = next(o for o in objs if isinstance(o, VirtualService) and not o.is_delegate)
    problems: list[str] = []
    merged = merge_delegates(root, delegates, lambda h, ns: h, problems, (".",))
    assert merged.http == () and "is not exported to namespace default" in problems[0]
    assert merge_delegates(root, delegates, lambda h, ns: h, [], ("*",)).http != ()


def test_who_may_take_a_root_match_carries_into_the_merged_match() -> None:
    """Istio's merge: the root's sourceLabels join the delegate's, its sourceNamespace
    and gateways apply where the delegate names none; differing ones conflict."""
    root = (HTTPMatch(uri=StringMatch("prefix", "/api"), source_labels=frozenset(
        {("app", "a")}), source_namespace="team-a", gateways=("mesh",)),)
    leaf = (HTTPMatch(uri=StringMatch("prefix", "/api/v2"),
                      source_labels=frozenset({("tier", "web")})),)
    merged = merge_matches(root, leaf)
    assert merged is not None
    [m] = merged
    assert m.source_labels == frozenset({("app", "a"), ("tier", "web")})
    assert (m.source_namespace, m.gateways) == ("team-a", ("mesh",))
    assert merge_matches(root, (HTTPMatch(uri=StringMatch("prefix", "/api"),
                                          source_labels=frozenset({("app", "b")})),)) is None
    assert merge_matches(root, (HTTPMatch(uri=StringMatch("prefix", "/api"),
                                          source_namespace="team-b"),)) is None
