"""`controlplane explain` against reality: a real Envoy sidecar (both xDS modes), real
upstreams that answer with who they are, and for each case of a table the request fired
through the sidecar. explain's prediction — from the control plane's view of the proxy
and from the Envoy's own /config_dump — must name what really answered: the endpoint
(and so the cluster and subset) or the proxy's own answer (status, Location)."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from controlplane import cli
from controlplane import log as logsetup
from controlplane.explain import source
from controlplane.explain.dump import parse_dump
from controlplane.explain.request import parse_request
from controlplane.explain.walk import Explanation, explain
from tests.harness import ControlPlane, http_request, wait_until, write_yaml
from tests.manifests import destination_rule, pod, service, virtual_service

pytestmark = pytest.mark.e2e

PORT = 19380  # the HTTP services' port on the sidecar
TCP_PORT = 19381  # a TCP service's port
TARGET = 18380  # the pods' port
HOST = "reviews.default.svc.cluster.local"


def manifests(ips: dict[str, str]) -> list[dict[str, Any]]:
    dr = destination_rule("reviews", "reviews", {"v1": {"version": "v1"},
                                                 "v2": {"version": "v2"}})
    dr["spec"]["trafficPolicy"] = {"connectionPool": {"tcp": {"maxConnections": 50}}}
    dr["spec"]["subsets"][1]["trafficPolicy"] = {
        "outlierDetection": {"consecutive5xxErrors": 7, "interval": "10s"}}
    v1 = {"destination": {"host": "reviews", "subset": "v1"}}
    v2 = {"destination": {"host": "reviews", "subset": "v2"}}
    db = service("db", TCP_PORT, target=TARGET, port_name="tcp")
    return [
        service("reviews", PORT, target=TARGET), service("ratings", PORT, target=TARGET), db,
        pod("reviews-v1", ips["reviews-v1"], {"app": "reviews", "version": "v1"}),
        pod("reviews-v2", ips["reviews-v2"], {"app": "reviews", "version": "v2"}),
        pod("ratings-1", ips["ratings-1"], {"app": "ratings", "version": "v1"}),
        pod("db-1", ips["db-1"], {"app": "db", "version": "v1"}),
        dr,
        virtual_service("reviews", ["reviews"], [
            {"match": [{"headers": {"end-user": {"exact": "jason"}}}], "route": [v2]},
            {"match": [{"uri": {"exact": "/exact"}}], "route": [v1]},
            {"match": [{"uri": {"prefix": "/redirect"}}],
             "redirect": {"uri": "/moved", "authority": "ratings"}},
            {"match": [{"uri": {"prefix": "/direct"}}],
             "directResponse": {"status": 418, "body": {"string": "teapot"}}},
            {"match": [{"uri": {"prefix": "/abort"}}], "route": [v1],
             "fault": {"abort": {"httpStatus": 503, "percentage": {"value": 100}}}},
            {"match": [{"uri": {"regex": "/re/[0-9]+"}}],
             "route": [{"destination": {"host": "ratings"}}]},
            {"match": [{"queryParams": {"flag": {"exact": "on"}}}], "route": [v2]},
            {"match": [{"method": {"exact": "POST"}}],
             "directResponse": {"status": 201}},
            {"name": "by-weight", "match": [{"uri": {"prefix": "/w"}}],
             "route": [{**v1, "weight": 0}, {**v2, "weight": 100}]},
            {"match": [{"uri": {"prefix": "/portredirect"}}],
             "redirect": {"uri": "/x", "port": 8080}},
            # :authority keeps the Host's case (only the virtual host is chosen by any case)
            {"match": [{"uri": {"prefix": "/auth"}, "authority": {"exact": f"Reviews:{PORT}"}}],
             "route": [v2]},
            {"match": [{"uri": {"prefix": "/"}, "withoutHeaders": {"x-miss": {}}}],
             "route": [v1]},
        ]),
    ]


# (path, headers, method) and what must answer: the pod, or (status, Location). A Host
# among the headers is the URL's authority for explain (no Host header given to it).
CASES: list[tuple[str, dict[str, str], str, str | tuple[int, str]]] = [
    ("/", {"end-user": "jason"}, "GET", "reviews-v2"),  # a header match, first rule
    ("/exact", {}, "GET", "reviews-v1"),  # exact path
    ("/exact/more", {}, "GET", "reviews-v1"),  # not exact: falls to the last rule
    ("/redirect/x", {}, "GET", (301, "http://ratings/moved")),
    ("/redirect/x?k=v", {}, "GET", (301, "http://ratings/moved?k=v")),  # the query kept
    ("/portredirect?k", {}, "GET", (301, "http://reviews:8080/x?k")),
    ("/direct", {}, "GET", (418, "")),
    ("/abort", {}, "GET", (503, "")),
    ("/re/42", {}, "GET", "ratings-1"),  # a regex, matched whole
    ("/re/42x", {}, "GET", "reviews-v1"),  # ... not a prefix
    ("/q?flag=on", {}, "GET", "reviews-v2"),  # a query parameter
    ("/q?flag=off", {}, "GET", "reviews-v1"),
    ("/post", {}, "POST", (201, "")),  # a method match
    ("/w/1", {}, "GET", "reviews-v2"),  # a subset by weight 100
    ("/miss", {"x-miss": "1"}, "GET", (404, "")),  # no route matches: 404 NR
    # normalize_path: dot segments removed; merge_slashes is off, so `//` stays
    ("/x/../re/42", {}, "GET", "ratings-1"),
    ("/re//42", {}, "GET", "reviews-v1"),
    ("//re/42", {}, "GET", "reviews-v1"),
    ("/re\\42", {}, "GET", "ratings-1"),  # a backslash is a slash
    ("/%72e/42", {}, "GET", "ratings-1"),  # an escaped unreserved character decoded
    ("/re%2F42", {}, "GET", "reviews-v1"),  # an escaped slash kept (KEEP_UNCHANGED)
    ("/RE/42", {}, "GET", "reviews-v1"),  # the path's case kept
    # the authority as sent: a case-sensitive match, the virtual host by any case
    ("/auth", {"Host": f"Reviews:{PORT}"}, "GET", "reviews-v2"),
    ("/auth", {"Host": f"reviews:{PORT}"}, "GET", "reviews-v1"),
    ("/auth", {"Host": f"REVIEWS:{PORT}"}, "GET", "reviews-v1"),
]


def predicted(e: Explanation) -> tuple[str, int | None, list[str]]:
    """(action, status, the addresses of the endpoints that may answer)."""
    addresses = [ep.address for d in e.destinations if d.percent > 0 for ep in d.endpoints]
    return e.action, e.status, addresses


def agrees(e: Explanation, status: int, headers: dict[str, str], body: Any,
           want: str | tuple[int, str]) -> None:
    """The explanation names what really answered."""
    if isinstance(want, str):
        assert e.action == "route" and e.routed, e.to_dict()
        assert status == 200 and body["pod"] == want, (status, body)
        [d] = [d for d in e.destinations if d.percent > 0]
        assert [ep.address for ep in d.endpoints] == [body["address"]], (d, body)
        assert [ep.pod for ep in d.endpoints] == [f"default/{want}"], d
    else:
        code, location = want
        assert status == code == e.status, (status, e.to_dict())
        if location:
            assert headers["location"] == location and e.answer.endswith(location), e.answer
        assert e.routed == (code != 404), e.to_dict()


def run_cli(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    finally:  # main configured logging onto the captured stdout; the tests' again
        logsetup.configure("warning", cache=False)


@pytest.fixture
def mesh(ip: Any, upstream: Any, config_dir: Path) -> dict[str, str]:
    ips = {name: ip() for name in ("reviews-v1", "reviews-v2", "ratings-1", "db-1")}
    for name, addr in ips.items():
        svc, _, ver = name.rpartition("-")
        upstream(addr, TARGET, svc, name, version=ver if ver.startswith("v") else "v1")
    write_yaml(config_dir / "mesh.yaml", *manifests(ips))
    return ips


def test_explain_agrees_with_envoy(file_cp: ControlPlane, mesh: dict[str, str], envoy: Any,
                                   ip: Any) -> None:
    sidecar = ip()
    proxy = envoy("explain-e2e", file_cp.port, instance_ip=sidecar)
    server = f"127.0.0.1:{file_cp.http_port}"
    # The last rule's answer means the sidecar holds the whole VirtualService and the
    # endpoints (all in one file, so one snapshot).
    wait_until(lambda: http_request(sidecar, PORT, "reviews", "/w")[2]["pod"] == "reviews-v2",
               10, what="the sidecar routing by the VirtualService")
    pods = source.pod_names(server)
    views = {"control plane": parse_dump(source.control_plane_dump(server, "explain-e2e")),
             "envoy": parse_dump(source.envoy_dump(f"127.0.0.1:{proxy.admin_port}"))}
    for path, headers, method, want in CASES:
        host = headers.get("Host")
        url = f"http://{host}{path}" if host else f"http://reviews:{PORT}{path}"
        req = parse_request(url, [f"{k}: {v}" for k, v in headers.items() if k != "Host"]
                            + ([] if host else ["host: reviews"]), method)
        status, got, body = http_request(sidecar, PORT, "reviews", path, headers, method,
                                         timeout=10)
        answers = {name: explain(dump, req, pods) for name, dump in views.items()}
        for name, e in answers.items():
            try:
                agrees(e, status, got, body, want)
            except AssertionError as exc:
                raise AssertionError(f"{method} {path} {headers} ({name}): {exc}") from None
        assert predicted(answers["control plane"]) == predicted(answers["envoy"])

    # A Host no service takes: the catch-all virtual host (ALLOW_ANY), PassthroughCluster,
    # which has no original destination here: 503.
    status, _, body = http_request(sidecar, PORT, "nothing.example", "/", timeout=10)
    for dump in views.values():
        e = explain(dump, parse_request(f"http://nothing.example:{PORT}/",
                                        ["host: nothing.example"]), pods)
        assert (e.virtual_host, e.domain, e.routed) == ("allow_any", "*", False), e
        assert [d.cluster for d in e.destinations] == ["PassthroughCluster"]
        assert status == 503 and body == "no healthy upstream", (status, body)

    # TCP: the port's only service takes every connection (tcp_proxy).
    with socket.create_connection((sidecar, TCP_PORT), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: db\r\nConnection: close\r\n\r\n")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    answered = json.loads(reply.split(b"\r\n\r\n", 1)[1])
    for dump in views.values():
        e = explain(dump, parse_request(f"tcp://db:{TCP_PORT}"), pods)
        assert e.action == "tcp_proxy" and e.routed, e
        [d] = e.destinations
        assert d.cluster == f"outbound|{TCP_PORT}||db.default.svc.cluster.local"
        assert [(ep.address, ep.pod) for ep in d.endpoints] == [
            (answered["address"], "default/db-1")], d


def test_explain_command(file_cp: ControlPlane, mesh: dict[str, str], envoy: Any, ip: Any,
                         capsys: pytest.CaptureFixture[str]) -> None:
    """The command: text and JSON, exit 0 routed, 1 not routed, 2 unreadable input; the
    policies each name their DestinationRule level."""
    sidecar = ip()
    proxy = envoy("explain-cli", file_cp.port, instance_ip=sidecar)
    server = f"127.0.0.1:{file_cp.http_port}"
    wait_until(lambda: http_request(sidecar, PORT, "reviews", "/w")[2]["pod"] == "reviews-v2",
               10, what="the sidecar routing by the VirtualService")
    base = ["explain", "--proxy", "explain-cli", "--server", server]
    assert run_cli([*base, f"http://reviews:{PORT}/exact/more", "-H", "x-miss: 1"]) == 1
    out = capsys.readouterr().out
    assert "404 (NR)" in out and "(not routed)" in out, out
    assert "header x-miss absent: got '1'" in out, out

    assert run_cli([*base, f"http://reviews:{PORT}/", "-H", "end-user: jason",
                     "-o", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["virtual_service"], result["rule"]) == ("default/reviews",
                                                          "spec.http[0].match[0]")
    [dest] = result["destinations"]
    assert (dest["service"], dest["subset"], dest["percent"]) == (HOST, "v2", 100.0)
    assert dest["destination_rule"] == "default/reviews"
    assert {p["name"]: p["source"] for p in dest["policies"]} == {
        "circuit breakers": "trafficPolicy", "outlier detection": "subsets[1].trafficPolicy"}
    assert result["domain"] == f"reviews:{PORT}" and result["domain_match"] == "exact domain"

    assert run_cli([*base, f"http://reviews:{PORT}/"]) == 0
    out = capsys.readouterr().out
    assert f"outbound|{PORT}|v1|{HOST}" in out and "pod default/reviews-v1" in out, out
    assert "skipped route default.reviews.0 (VirtualService default/reviews spec.http[0]" \
        ".match[0]): header end-user is 'jason': absent" in out, out
    assert "circuit breakers: max_connections=50  [trafficPolicy]" in out, out
    # A route the user named: only its metadata says where it came from.
    assert "skipped route by-weight (VirtualService default/reviews spec.http[8].match[0])" \
        in out, out

    # The Envoy's own view; pod names still from the control plane (--server)
    assert run_cli(["explain", "--envoy-admin", f"http://127.0.0.1:{proxy.admin_port}",
                    "--server", server, f"http://reviews:{PORT}/w/x"]) == 0
    out = capsys.readouterr().out
    assert "route     by-weight  VirtualService default/reviews spec.http[8].match[0]" \
        in out, out
    assert f"outbound|{PORT}|v2|{HOST}  100%  service {HOST} port {PORT} subset v2" in out, out
    assert "pod default/reviews-v2" in out, out

    assert run_cli(["explain", "--proxy", "nobody", "--server", server,
                     f"http://reviews:{PORT}/"]) == 2
    assert "no proxy with node id 'nobody'" in capsys.readouterr().err
