"""The shadowed-route decision against a real Envoy: random rule lists from a small
alphabet (seeded), one VirtualService per service, every rule a direct response naming
its index, all in one config so one Envoy start checks them all (SotW and Delta).

(a) A route the decision calls unreachable never answers: not for requests drawn from
    its own matches (with the Host in any case spelling), nor for any witness of
    another route.
    Two sidecars ask: one with the labels some rules' sourceLabels select, one without.
(b) A reachable route answers its witness request — decided for each sidecar's view
    (the matches its labels take), which is what it was sent.
"""

from __future__ import annotations

import http.client
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import re2

from controlplane.analysis.checks.shadowed import spaces
from controlplane.analysis.shadow import Outcome, Request, decide_in
from controlplane.model.errors import ValidationError
from controlplane.model.mesh import build_mesh
from controlplane.model.parse import key_of, parse_object
from controlplane.model.virtual_service import HTTPMatch, HTTPRoute
from tests.harness import ControlPlane, wait_until, write_yaml
from tests.manifests import ISTIO

pytestmark = pytest.mark.e2e

PORTS = (19561, 19562)
SERVICES = 80
SEED = 16
LABELS = {"app": "client"}  # one sidecar's; the other has none
PATHS = ["/", "/a", "/ab", "/a/b", "/b", "/A", "/Ab"]
REGEXES = ["/a.*", "/[ab]+", "/a/[a-z]", "^/ab.*$"]
# Strings the generator may pick for a regex, kept if they match it.
REGEX_SAMPLES = ["/a", "/ab", "/a/b", "/b", "/ba", "/aa/x", "/a/z", "/abc"]


def _match(rng: random.Random, name: str) -> dict[str, Any]:
    m: dict[str, Any] = {}
    r = rng.random()
    if r < 0.3:
        m["uri"] = {"prefix": rng.choice(PATHS)}
    elif r < 0.55:
        m["uri"] = {"exact": rng.choice(PATHS)}
    elif r < 0.65:
        m["uri"] = {"regex": rng.choice(REGEXES)}
    if "uri" in m and rng.random() < 0.3:
        m["ignoreUriCase"] = True
    if rng.random() < 0.35:
        m["headers"] = {"x": rng.choice([{}, {"exact": "1"}, {"prefix": "1"}, {"exact": "2"},
                                         {"regex": "[0-9]+"}, {"regex": ".*"}])}
    if rng.random() < 0.12:
        m.setdefault("headers", {})["y"] = {}
    if rng.random() < 0.2:
        m["withoutHeaders"] = {"x": rng.choice([{}, {"exact": "1"}])}
    if rng.random() < 0.2:
        m["method"] = rng.choice([{"exact": "GET"}, {"exact": "POST"}, {"prefix": "P"}])
    if rng.random() < 0.2:
        m["queryParams"] = {"q": rng.choice([{"exact": "1"}, {"regex": "[0-9]+"},
                                             {"exact": ""}])}
    if rng.random() < 0.2:
        m["port"] = rng.choice(PORTS)
    if rng.random() < 0.1:
        m["authority"] = rng.choice([{"exact": f"{name}.default.svc.cluster.local"},
                                     {"prefix": name}, {"exact": name},
                                     {"exact": name.upper()}, {"prefix": name.upper()}])
    if rng.random() < 0.1:
        m["sourceLabels"] = rng.choice([dict(LABELS), {"app": "other"}])
    return m


def _rule(rng: random.Random, i: int, name: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"name": f"r{i}",
                            "directResponse": {"status": 200, "body": {"string": f"r{i}"}}}
    if rng.random() > 0.1:
        rule["match"] = [_match(rng, name) for _ in range(rng.choice((1, 1, 2)))]
    return rule


def _docs(rng: random.Random) -> list[dict[str, Any]]:
    docs = []
    for k in range(SERVICES):
        name = f"svc-{k}"
        docs.append({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": name, "namespace": "default"},
                     "spec": {"selector": {"app": name},
                              "ports": [{"name": f"http-{p}", "port": p} for p in PORTS]}})
        while True:  # a rule list the loader accepts (a random one may contradict itself)
            vs = {"apiVersion": ISTIO, "kind": "VirtualService",
                  "metadata": {"name": name, "namespace": "default"},
                  "spec": {"hosts": [name],
                           "http": [_rule(rng, i, name) for i in range(rng.randint(3, 7))]}}
            try:
                parse_object(vs)
            except ValidationError:
                continue
            docs.append(vs)
            break
    return docs


# -- requests ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sent:
    port: int
    authority: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    query: tuple[tuple[str, str], ...]


def _flip_case(rng: random.Random, s: str) -> str:
    return "".join(c.swapcase() if rng.random() < 0.5 else c for c in s)


def _value(rng: random.Random, lit: dict[str, Any] | None, choices: list[str]) -> str:
    if not lit:
        return rng.choice(choices)
    if "exact" in lit:
        return str(lit["exact"])
    if "prefix" in lit:
        return lit["prefix"] + rng.choice(["", "0", "z"])
    return rng.choice([c for c in choices if re2.fullmatch(lit["regex"], c)] or choices)


def _drawn(rng: random.Random, m: dict[str, Any], authorities: list[str]) -> Sent:
    """A random request meeting match `m` (as Envoy reads it)."""
    uri = m.get("uri")
    if uri is None:
        path = rng.choice([*PATHS, "/c", "/a/b/c"])
    elif "exact" in uri:
        path = uri["exact"]
    elif "prefix" in uri:
        path = uri["prefix"] + rng.choice(["", "a", "b", "/x", "c1"])
    else:
        path = rng.choice([s for s in REGEX_SAMPLES if re2.fullmatch(uri["regex"], s)]
                          or REGEX_SAMPLES)
    if m.get("ignoreUriCase"):
        path = _flip_case(rng, path)
    headers = []
    if "x" in m.get("headers", {}):
        headers.append(("x", _value(rng, m["headers"]["x"], ["1", "2", "10", "z", "7"])))
    elif "x" in m.get("withoutHeaders", {}):
        if m["withoutHeaders"]["x"]:  # an inverted value match needs the header there
            headers.append(("x", rng.choice(["2", "10", "z"])))
    elif rng.random() < 0.5:
        headers.append(("x", rng.choice(["1", "2", "10", "z"])))
    if "y" in m.get("headers", {}) or rng.random() < 0.3:
        headers.append(("y", "v"))
    method = _value(rng, m.get("method"), ["GET", "POST", "PUT", "PATCH", "DELETE"])
    if "prefix" in m.get("method", {}):
        method = rng.choice(["POST", "PUT", "PATCH"])
    query = []
    if "q" in m.get("queryParams", {}):
        lit = m["queryParams"]["q"]
        query.append(("q", _value(rng, lit if lit.get("exact") != "" else None,
                                  ["1", "42", "a"])))
    elif rng.random() < 0.3:
        query.append(("q", rng.choice(["1", "a"])))
    # Any case spelling of a name reaches the host (Envoy picks the virtual host
    # case-insensitively), and `authority:` matches see it as sent.
    auth = m.get("authority")
    pool = [*authorities, *(_flip_case(rng, a) for a in authorities)]
    if auth and "exact" in auth and auth["exact"].lower() in authorities:
        pool.append(auth["exact"])
    if auth and "prefix" in auth:  # the literal's spelling, then a name's rest
        p = auth["prefix"]
        pool += [p + a[len(p):] for a in authorities if a.startswith(p.lower())]
    # (A match no spelling of a name meets: any request, which must not reach it either.)
    authority = rng.choice([a for a in pool if _takes(auth, a)] or pool if auth else pool)
    return Sent(m.get("port") or rng.choice(PORTS), authority, method, path,
                tuple(headers), tuple(query))


def _takes(lit: dict[str, Any], value: str) -> bool:
    return value == lit["exact"] if "exact" in lit else value.startswith(lit["prefix"])


def _witness(w: Request) -> Sent:
    assert w.port is not None and w.authority  # each space has one port and its names
    return Sent(w.port, w.authority, w.method, w.path, w.headers, w.query)


def _answer(ip: str, sent: Sent) -> str:
    conn = http.client.HTTPConnection(ip, sent.port, timeout=5)
    try:
        target = sent.path + (f"?{urlencode(sent.query)}" if sent.query else "")
        conn.request(sent.method, target,
                     headers={"Host": sent.authority, **dict(sent.headers)})
        resp = conn.getresponse()
        return resp.read().decode()
    finally:
        conn.close()


# -- the sidecar's view --------------------------------------------------------------------

NOWHERE = HTTPMatch(gateways=("elsewhere",))  # a match no sidecar takes


def _seen_by(routes: tuple[HTTPRoute, ...], labels: frozenset[tuple[str, str]]
             ) -> list[HTTPRoute]:
    """The routes as a sidecar with these labels gets them: only the matches it takes,
    and those without client conditions (a route left with none: dropped)."""
    out = []
    for r in routes:
        kept = tuple(replace(m, source_labels=frozenset(), source_namespace="")
                     for m in r.matches if m.applies_to(labels, "default"))
        out.append(replace(r, matches=kept if kept or not r.matches else (NOWHERE,)))
    return out


def _expected_names(routes: tuple[HTTPRoute, ...], port: int,
                    labels: frozenset[tuple[str, str]]) -> list[str]:
    """Envoy's route names on `port` for a sidecar (as translate/routes.py emits)."""
    names = []
    for r in routes:
        if not r.matches:
            names.append(r.name)
        names += [r.name for m in r.matches
                  if m.port in (None, port) and m.applies_to(labels, "default")]
    return names or ["default"]


def _vhost_routes(dump: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    out = {}
    for config in dump["configs"]:
        for rc in config.get("dynamic_route_configs", []):
            for vh in rc["route_config"].get("virtual_hosts", []):
                out[(rc["route_config"]["name"], vh["name"])] = [
                    r.get("name", "") for r in vh.get("routes", [])]
    return out


def test_unreachable_routes_never_answer_and_reachable_ones_answer_their_witness(
        file_cp: ControlPlane, config_dir: Path, ip: Any, envoy: Any) -> None:
    rng = random.Random(SEED)
    docs = _docs(rng)
    objects = {key_of(o): o for o in map(parse_object, docs)}
    mesh = build_mesh(objects)
    write_yaml(config_dir / "mesh.yaml", *docs)
    sidecars = []  # (address, labels)
    for labels in (LABELS, {}):
        address = ip()
        proxy = envoy(f"shadow-{address}", file_cp.port, instance_ip=address,
                      namespace="default", labels=labels)
        sidecars.append((address, frozenset(labels.items()), proxy))

    cases = []  # (service fqdn, its routes, its spaces)
    for k in range(SERVICES):
        fqdn = f"svc-{k}.default.svc.cluster.local"
        cases.append((fqdn, mesh.virtual_services[fqdn].http, spaces(mesh.services[fqdn])))
    for _, labels, proxy in sidecars:
        want = {(str(p), f"{fqdn}:{p}"): _expected_names(routes, p, labels)
                for fqdn, routes, _ in cases for p in PORTS}

        def delivered(proxy: Any = proxy, want: Any = want) -> bool:
            have = _vhost_routes(proxy.config_dump())
            return all(have.get(key) == names for key, names in want.items())
        wait_until(delivered, 15, what="every VirtualService's routes reached Envoy")

    counts = {"unreachable": 0, "reachable": 0, "unknown": 0, "drawn": 0}
    for fqdn, routes, space in cases:
        everyone = {v.route: v for v in decide_in(routes, space)}
        dead = {f"r{i}" for i, v in everyone.items() if v.outcome is Outcome.COVERED}
        sent: list[Sent] = []
        for address, labels, _ in sidecars:
            for v in decide_in(_seen_by(routes, labels), space):
                if v.outcome is Outcome.REACHABLE:
                    assert v.witness is not None
                    w = _witness(v.witness)
                    counts["reachable"] += 1
                    got = _answer(address, w)
                    assert got == f"r{v.route}", (fqdn, v.route, labels, w, got, routes)
                    sent.append(w)
                elif v.outcome is Outcome.UNKNOWN:
                    counts["unknown"] += 1
        # Requests drawn from each unreachable route's own matches.
        raw = next(d for d in docs if d["kind"] == "VirtualService"
                   and f"{d['metadata']['name']}.default.svc.cluster.local" == fqdn)
        for i, v in everyone.items():
            if v.outcome is not Outcome.COVERED:
                continue
            counts["unreachable"] += 1
            for m in raw["spec"]["http"][i].get("match", [{}]):
                for _ in range(6):
                    sent.append(_drawn(rng, m, [a for sp in space for a in sp.authorities]))
                    counts["drawn"] += 1
        for address, _, _ in sidecars:
            for s in sent:
                got = _answer(address, s)
                assert got not in dead, (fqdn, s, got, routes)
    # The draw must exercise both sides, or the test proves nothing.
    assert counts["unreachable"] >= 10 and counts["reachable"] >= 40, counts
    assert counts["unknown"] <= counts["reachable"] // 4, counts
