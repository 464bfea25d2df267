"""Per-proxy views of the routes (controlplane/model/scoping.py): client-selecting matches
(sourceLabels, sourceNamespace, gateways), exportTo on VirtualServices and Services with
the mesh's defaults, and Sidecar egress hosts; and that proxies no rule tells apart still
share one set of route configuration bytes."""

from __future__ import annotations

from typing import Any

from envoy.config.route.v3 import route_pb2

from controlplane.model.mesh import Mesh, build_mesh
from controlplane.model.mesh_config import MeshConfig
from controlplane.model.parse import key_of, parse_object
from controlplane.model.proxy import ProxyView, proxy_view
from controlplane.translation import PROBE, MeshTranslation
from controlplane.xds import types
from tests.manifests import ISTIO, destination_rule, service, virtual_service

Routes = dict[str, list[str]]  # virtual host -> each route's cluster (or "direct")


def mesh_of(*docs: dict[str, Any], config: MeshConfig | None = None) -> Mesh:
    return build_mesh({key_of(o): o for o in map(parse_object, docs)}, config=config)


def proxy(namespace: str = "default", **labels: str) -> ProxyView:
    return ProxyView(node_id=f"{namespace}-{labels}", namespace=namespace,
                     labels=frozenset(labels.items()))


def routes_for(translation: MeshTranslation, p: ProxyView) -> Routes:
    out: Routes = {}
    for body in translation.messages(types.ROUTE, translation.group_key(types.ROUTE, p)):
        config = route_pb2.RouteConfiguration.FromString(body.body)
        for vh in config.virtual_hosts:
            if vh.name == "allow_any":  # the outbound traffic policy's catch-all, in every view
                continue
            out[vh.name.rsplit(":", 1)[0]] = [r.route.cluster or "direct" for r in vh.routes]
    return out


def exported(doc: dict[str, Any], *namespaces: str) -> dict[str, Any]:
    doc["spec"]["exportTo"] = list(namespaces)
    return doc


def reviews_with_subsets() -> list[dict[str, Any]]:
    return [service("reviews", 9080),
            destination_rule("reviews", "reviews", {"v1": {"v": "1"}, "v2": {"v": "2"}})]


def to(subset: str) -> list[dict[str, Any]]:
    return [{"destination": {"host": "reviews", "subset": subset}}]


V1 = "outbound|9080|v1|reviews.default.svc.cluster.local"
V2 = "outbound|9080|v2|reviews.default.svc.cluster.local"
PLAIN = "outbound|9080||reviews.default.svc.cluster.local"
REVIEWS = "reviews.default.svc.cluster.local"


# -- sourceLabels, sourceNamespace, gateways ---------------------------------------------

def test_source_labels_give_matching_proxies_their_own_routes() -> None:
    t = MeshTranslation(mesh_of(*reviews_with_subsets(), virtual_service("reviews", ["reviews"], [
        {"match": [{"sourceLabels": {"app": "web"}}], "route": to("v2")},
        {"route": to("v1")}])))
    assert routes_for(t, proxy(app="web", pod="x"))[REVIEWS] == [V2, V1]
    assert routes_for(t, proxy(app="api"))[REVIEWS] == [V1]
    assert routes_for(t, proxy())[REVIEWS] == [V1]
    # Views hold only what the rules distinguish: labels no rule names make no variant.
    keys = {t.group_key(types.ROUTE, p) for p in
            [proxy(), proxy(app="api"), proxy(app="api", v="2"), proxy(team="x")]}
    assert len(keys) == 1
    assert t.group_key(types.ROUTE, proxy(app="web", pod="a")) == t.group_key(
        types.ROUTE, proxy(app="web", pod="b"))


def test_source_namespace_selects_by_the_proxy_namespace() -> None:
    t = MeshTranslation(mesh_of(*reviews_with_subsets(), virtual_service("reviews", ["reviews"], [
        {"match": [{"sourceNamespace": "team-a", "sourceLabels": {"app": "web"}}],
         "route": to("v2")},
        {"route": to("v1")}])))
    assert routes_for(t, proxy("team-a", app="web"))[REVIEWS] == [V2, V1]
    assert routes_for(t, proxy("team-b", app="web"))[REVIEWS] == [V1]
    # The selector matters in team-a only: team-b's proxies are one view whatever labels.
    assert (t.group_key(types.ROUTE, proxy("team-b", app="web"))
            == t.group_key(types.ROUTE, proxy("team-b")))


def test_gateway_bound_matches_never_match_at_a_sidecar() -> None:
    t = MeshTranslation(mesh_of(*reviews_with_subsets(), virtual_service("reviews", ["reviews"], [
        {"match": [{"gateways": ["istio-system/edge"], "uri": {"prefix": "/a"}},
                   {"gateways": ["mesh"], "uri": {"prefix": "/b"}}], "route": to("v2")},
        {"route": to("v1")}])))
    config = t.messages(types.ROUTE, t.group_key(types.ROUTE, proxy()))[0]
    vh = route_pb2.RouteConfiguration.FromString(config.body).virtual_hosts[0]
    assert [(r.match.prefix, r.route.cluster) for r in vh.routes] == [("/b", V2), ("/", V1)]


def test_no_route_left_for_a_proxy_means_the_plain_route() -> None:
    """Istio: a VirtualService that yields no route for the proxy does not claim the
    host, which then routes straight to its service."""
    t = MeshTranslation(mesh_of(*reviews_with_subsets(), virtual_service("reviews", ["reviews"], [
        {"match": [{"sourceLabels": {"app": "web"}}], "route": to("v2")}])))
    assert routes_for(t, proxy(app="web"))[REVIEWS] == [V2]
    assert routes_for(t, proxy())[REVIEWS] == [PLAIN]


def test_no_route_left_on_a_port_means_the_plain_route_too() -> None:
    t = MeshTranslation(mesh_of(*reviews_with_subsets(), virtual_service("reviews", ["reviews"], [
        {"match": [{"port": 1234}], "route": to("v2")}])))
    assert routes_for(t, proxy())[REVIEWS] == [PLAIN]


def test_labels_and_namespace_come_from_node_metadata() -> None:
    p = proxy_view("sidecar-1", "", {"NAMESPACE": "team-a", "LABELS": {"app": "web"}})
    assert p.namespace == "team-a" and p.labels == frozenset({("app", "web")})


# -- exportTo ----------------------------------------------------------------------------

def test_private_virtual_service_is_seen_only_in_its_namespace() -> None:
    t = MeshTranslation(mesh_of(*reviews_with_subsets(), exported(
        virtual_service("reviews", ["reviews"], [{"route": to("v2")}]), ".")))
    assert routes_for(t, proxy("default"))[REVIEWS] == [V2]
    assert routes_for(t, proxy("team-b"))[REVIEWS] == [PLAIN]


def test_mesh_default_export_applies_to_objects_without_export_to() -> None:
    config = MeshConfig(default_virtual_service_export_to=(".",))
    t = MeshTranslation(mesh_of(*reviews_with_subsets(), virtual_service(
        "reviews", ["reviews"], [{"route": to("v2")}]), config=config))
    assert routes_for(t, proxy("default"))[REVIEWS] == [V2]
    assert routes_for(t, proxy("team-b"))[REVIEWS] == [PLAIN]
    config = MeshConfig(default_service_export_to=(".",))
    t = MeshTranslation(mesh_of(*reviews_with_subsets(), config=config))
    assert REVIEWS in routes_for(t, proxy("default"))
    assert REVIEWS not in routes_for(t, proxy("team-b"))


def test_istio_order_private_then_exported_by_name_then_public() -> None:
    """Istio's PushContext: a namespace's own private VirtualService, then those exported
    to it by name, then public ones, each oldest first."""
    public = virtual_service("public", ["reviews.default.svc.cluster.local"],
                             [{"route": to("v1")}], ns="default", created="2020-01-01T00:00:00Z")
    by_name = exported(virtual_service("for-b", ["reviews.default.svc.cluster.local"],
                                       [{"route": to("v2")}], ns="default",
                                       created="2021-01-01T00:00:00Z"), "team-b")
    own = exported(virtual_service("own", ["reviews.default.svc.cluster.local"],
                                   [{"route": [{"destination": {
                                       "host": "reviews.default.svc.cluster.local"}}]}],
                                   ns="team-c", created="2022-01-01T00:00:00Z"), ".")
    t = MeshTranslation(mesh_of(*reviews_with_subsets(), public, by_name, own))
    assert routes_for(t, proxy("team-a"))[REVIEWS] == [V1]
    assert routes_for(t, proxy("team-b"))[REVIEWS] == [V2]
    assert routes_for(t, proxy("team-c"))[REVIEWS] == [PLAIN]
    assert t.mesh.problems == ()


def test_service_export_to_annotation_hides_its_virtual_host() -> None:
    svc = service("db", 9080, ns="data")
    svc["metadata"]["annotations"] = {"networking.istio.io/exportTo": ".,team-a"}
    t = MeshTranslation(mesh_of(svc, service("web", 9080, ns="data")))
    assert "db.data.svc.cluster.local" in routes_for(t, proxy("data"))
    assert "db.data.svc.cluster.local" in routes_for(t, proxy("team-a"))
    assert set(routes_for(t, proxy("team-b"))) == {"web.data.svc.cluster.local"}


def test_destination_rule_export_to_is_validated_and_says_it_is_not_scoped() -> None:
    dr = parse_object(exported(destination_rule("r", "reviews", {}), "."))
    assert dr.export_to == (".",)
    assert dr.warnings == ("spec.exportTo: not scoped; clusters are shared by every proxy, "
                           "so the rule applies in every namespace",)


# -- Sidecar -----------------------------------------------------------------------------

def sidecar(name: str, ns: str, hosts: list[str], selector: dict[str, str] | None = None,
            created: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"egress": [{"hosts": hosts}]}
    if selector is not None:
        spec["workloadSelector"] = {"labels": selector}
    meta: dict[str, Any] = {"name": name, "namespace": ns}
    if created:
        meta["creationTimestamp"] = created
    return {"apiVersion": ISTIO, "kind": "Sidecar", "metadata": meta, "spec": spec}


def three_namespaces() -> list[dict[str, Any]]:
    return [service("a", 9080, ns="shop"), service("b", 9080, ns="team-b"),
            service("c", 9080, ns="team-c")]


def hosts(t: MeshTranslation, p: ProxyView) -> set[str]:
    return {h.split(".")[0] for h in routes_for(t, p)}


def test_sidecar_egress_hosts_scope_the_virtual_hosts() -> None:
    t = MeshTranslation(mesh_of(
        *three_namespaces(),
        sidecar("default", "shop", ["./*", "team-b/b.team-b.svc.cluster.local"]),
        sidecar("narrow", "shop", ["./*"], selector={"app": "web"}),
        sidecar("everything-but-c", "istio-system", ["*/*", "~team-c/*"])))
    assert hosts(t, proxy("shop")) == {"a", "b"}
    assert hosts(t, proxy("shop", app="web")) == {"a"}  # the selector's Sidecar wins
    assert hosts(t, proxy("team-b")) == {"a", "b"}  # the root namespace's default
    views = {t.group_key(types.ROUTE, p) for p in
             [proxy("shop"), proxy("shop", app="x"), proxy("shop", app="web")]}
    assert len(views) == 2


def test_root_namespace_default_reads_dot_as_the_proxy_namespace() -> None:
    t = MeshTranslation(mesh_of(*three_namespaces(), sidecar("default", "istio-system",
                                                             ["./*"])))
    assert hosts(t, proxy("team-b")) == {"b"}
    assert hosts(t, proxy("team-c")) == {"c"}


def test_sidecar_imports_virtual_services_by_their_namespace() -> None:
    """Istio selects a VirtualService by its own namespace against the egress host's:
    a rule written in another namespace than the ones imported does not apply."""
    vs = virtual_service("b", ["b.team-b.svc.cluster.local"], [{"route": [
        {"destination": {"host": "c.team-c.svc.cluster.local"}}]}], ns="team-c")
    only_b = sidecar("default", "shop", ["team-b/*"])
    t = MeshTranslation(mesh_of(*three_namespaces(), vs, only_b))
    assert routes_for(t, proxy("shop"))["b.team-b.svc.cluster.local"] == [
        "outbound|9080||b.team-b.svc.cluster.local"]
    assert routes_for(t, proxy("team-b"))["b.team-b.svc.cluster.local"] == [
        "outbound|9080||c.team-c.svc.cluster.local"]


def test_sidecar_change_is_a_routing_change() -> None:
    objs = {key_of(o): o for o in map(parse_object, three_namespaces())}
    first = build_mesh(objs)
    side = parse_object(sidecar("default", "shop", ["./*"]))
    objs[key_of(side)] = side
    from controlplane.model.mesh_index import MeshIndex
    second = build_mesh(MeshIndex.of(objs), first, {key_of(side): None})
    assert second.routes_changed
    assert hosts(MeshTranslation(second, MeshTranslation(first)), proxy("shop")) == {"a"}


# -- checks and sharing ------------------------------------------------------------------

def test_a_private_virtual_service_envoy_would_reject_is_reported() -> None:
    """Routes only some views use are checked at publish time like the shared ones, and
    the failure names the VirtualService behind them."""
    # Well formed for Istio, a format variable Envoy does not know (tests/test_isolation).
    bad = exported(virtual_service("bad", ["reviews"], [{"route": to("v1"), "headers": {
        "response": {"set": {"x-a": "%NO_SUCH_VARIABLE%"}}}}]), ".")
    t = MeshTranslation(mesh_of(*reviews_with_subsets(), bad))
    t.prepare(PROBE)
    assert [f.suspects[0].name for f in t.failures] == ["bad"], t.failures


def test_without_client_selecting_rules_every_namespace_is_one_view() -> None:
    t = MeshTranslation(mesh_of(*reviews_with_subsets(), virtual_service(
        "reviews", ["reviews"], [{"route": to("v1")}])))
    views = {t.group_key(types.ROUTE, proxy(ns, app=app))
             for ns in ("default", "team-a") for app in ("web", "api")}
    assert len(views) == 2
    # The shared virtual host's bytes are the same object in both namespaces' configs.
    a, b = (t.messages(types.ROUTE, t.group_key(types.ROUTE, proxy(ns)))[0].body
            for ns in ("team-a", "team-b"))
    assert a == b


# -- TCP: listeners ----------------------------------------------------------------------

def tcp_clusters(t: MeshTranslation, p: ProxyView) -> dict[int, list[str]]:
    """Per listener port, the cluster of each TCP chain (default chain first)."""
    from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
    out: dict[int, list[str]] = {}
    for listener in t.messages(types.LISTENER, t.group_key(types.LISTENER, p)):
        chains = [listener.default_filter_chain, *listener.filter_chains]
        for chain in chains:
            for f in chain.filters:
                if f.name == "envoy.filters.network.tcp_proxy":
                    proxy_ = tcp_proxy_pb2.TcpProxy()
                    f.typed_config.Unpack(proxy_)
                    out.setdefault(listener.address.socket_address.port_value, []).append(
                        proxy_.cluster)
    return out


def test_tcp_routes_follow_export_to_and_services_their_visibility() -> None:
    db = service("db", 5432, port_name="tcp", cluster_ip="10.0.0.5")
    replica = service("replica", 5432, port_name="tcp", cluster_ip="10.0.0.6")
    replica["metadata"]["annotations"] = {"networking.istio.io/exportTo": "."}
    vs = exported({"apiVersion": ISTIO, "kind": "VirtualService",
                   "metadata": {"name": "db", "namespace": "default"},
                   "spec": {"hosts": ["db"], "tcp": [{"route": [
                       {"destination": {"host": "replica"}}]}]}}, ".")
    t = MeshTranslation(mesh_of(db, replica, vs))
    replica_cluster = "outbound|5432||replica.default.svc.cluster.local"
    db_cluster = "outbound|5432||db.default.svc.cluster.local"
    assert tcp_clusters(t, proxy("default")) == {5432: [replica_cluster, replica_cluster]}
    assert tcp_clusters(t, proxy("team-b")) == {5432: [db_cluster]}
    # Labels do not split listeners; namespaces do, as routes.
    assert t.group_key(types.LISTENER, proxy("team-b", app="x")) == t.group_key(
        types.LISTENER, proxy("team-b"))


def test_listeners_stay_one_set_per_bind_address_without_scoping() -> None:
    t = MeshTranslation(mesh_of(service("db", 5432, port_name="tcp"), service("web", 80)))
    assert t.group_key(types.LISTENER, proxy("a")) == t.group_key(types.LISTENER, proxy("b"))
    assert t.group_key(types.LISTENER, proxy("a")) == "0.0.0.0"


def test_tls_routes_follow_export_to() -> None:
    """A private VirtualService's `tls` routes shape only its own namespace's listeners:
    elsewhere the TLS service keeps its passthrough chain."""
    api = service("api", 443, port_name="tls", cluster_ip="10.0.0.7")
    web = service("web", 443, port_name="tls", cluster_ip="10.0.0.8")
    vs = exported({"apiVersion": ISTIO, "kind": "VirtualService",
                   "metadata": {"name": "api", "namespace": "team-a"},
                   "spec": {"hosts": ["api.default.svc.cluster.local"], "tls": [{
                       "match": [{"sniHosts": ["api.default.svc.cluster.local"]}],
                       "route": [{"destination": {
                           "host": "web.default.svc.cluster.local"}}]}]}}, ".")
    t = MeshTranslation(mesh_of(api, web, vs))
    api_cluster = "outbound|443||api.default.svc.cluster.local"
    web_cluster = "outbound|443||web.default.svc.cluster.local"

    def by_sni(p: ProxyView) -> str:
        from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
        [listener] = t.messages(types.LISTENER, t.group_key(types.LISTENER, p))
        for chain in listener.filter_chains:
            if "api.default.svc.cluster.local" in chain.filter_chain_match.server_names:
                proxy_ = tcp_proxy_pb2.TcpProxy()
                chain.filters[0].typed_config.Unpack(proxy_)
                return proxy_.cluster
        raise AssertionError("no chain names api's SNI")

    assert by_sni(proxy("team-a")) == web_cluster
    assert by_sni(proxy("team-b")) == api_cluster


def test_a_namespace_whose_own_virtual_service_has_no_tcp_route_gets_the_plain_chain(
        ) -> None:
    """The public VirtualService routes db's TCP elsewhere; team-a's own (private, HTTP
    routes only) is the one in force there, so team-a's listeners send db to db."""
    db = service("db", 5432, port_name="tcp", cluster_ip="10.0.0.5")
    replica = service("replica", 5432, port_name="tcp", cluster_ip="10.0.0.6")
    public = {"apiVersion": ISTIO, "kind": "VirtualService",
              "metadata": {"name": "db", "namespace": "default"},
              "spec": {"hosts": ["db.default.svc.cluster.local"], "tcp": [{"route": [
                  {"destination": {"host": "replica.default.svc.cluster.local"}}]}]}}
    own = exported({"apiVersion": ISTIO, "kind": "VirtualService",
                    "metadata": {"name": "db", "namespace": "team-a"},
                    "spec": {"hosts": ["db.default.svc.cluster.local"], "http": [{"route": [
                        {"destination": {"host": "db.default.svc.cluster.local"}}]}]}}, ".")
    t = MeshTranslation(mesh_of(db, replica, public, own))
    replica_cluster = "outbound|5432||replica.default.svc.cluster.local"
    db_cluster = "outbound|5432||db.default.svc.cluster.local"
    assert tcp_clusters(t, proxy("team-b"))[5432][0] == replica_cluster
    assert tcp_clusters(t, proxy("team-a"))[5432][0] == db_cluster
