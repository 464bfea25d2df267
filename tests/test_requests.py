"""SotW requests read in two parts: the head always, the names only when their bytes
differ from the subscription's. Whatever the bytes, the fast path must agree with a full
parse."""

from __future__ import annotations

import random
from pathlib import Path

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from controlplane.xds.requests import SotwRequest
from controlplane.xds.subscriptions import Subscriptions

EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
NAMES = tuple(f"outbound|9080||svc-{i}.ns.svc.cluster.local" for i in range(300))


def request(names: tuple[str, ...] = NAMES, **fields: object) -> bytes:
    return discovery_pb2.DiscoveryRequest(
        type_url=EDS, resource_names=names, **fields).SerializeToString()  # type: ignore[arg-type]


def test_head_fields_and_names() -> None:
    node = base_pb2.Node(id="sidecar-1", cluster="c")
    r = SotwRequest(request(version_info="v1", response_nonce="7", node=node))
    assert (r.type_url, r.version_info, r.response_nonce) == (EDS, "v1", "7")
    assert r.node() == node and r.error_message() is None
    assert r.names() == NAMES
    assert SotwRequest(request()).node() is None


def test_a_nack_with_an_empty_status_is_still_a_nack() -> None:
    r = SotwRequest(request(response_nonce="7", error_detail=status_pb2.Status()))
    assert r.error_message() == ""
    r = SotwRequest(request(response_nonce="7",
                            error_detail=status_pb2.Status(code=3, message="bad")))
    assert r.error_message() == "bad"


def test_same_names_match_whatever_version_and_nonce() -> None:
    sub = Subscriptions().get(NAMES)
    node = base_pb2.Node(id="sidecar-1")
    for fields in ({}, {"version_info": "v9", "response_nonce": "12-3"}, {"node": node},
                   {"error_detail": status_pb2.Status(message="x")}):
        assert SotwRequest(request(**fields)).names_are(sub), fields


def test_other_names_or_other_encodings_do_not_match() -> None:
    sub = Subscriptions().get(NAMES)
    assert not SotwRequest(request(NAMES[::-1])).names_are(sub)  # order as sent
    assert not SotwRequest(request(NAMES[:-1])).names_are(sub)
    assert not SotwRequest(request((*NAMES, "x"))).names_are(sub)
    assert not SotwRequest(request((*NAMES[:5], "z" + NAMES[5][1:], *NAMES[6:]))).names_are(sub)
    assert not SotwRequest(request(())).names_are(sub)
    assert not SotwRequest(request()).names_are(None)
    # Fields out of canonical order, and a field the head does not know (locators): the
    # same names, but the request is parsed in full rather than trusted.
    shuffled = (discovery_pb2.DiscoveryRequest(type_url=EDS).SerializeToString()
                + discovery_pb2.DiscoveryRequest(resource_names=NAMES).SerializeToString())
    assert SotwRequest(shuffled).names() == NAMES
    assert not SotwRequest(shuffled).names_are(sub)
    located = discovery_pb2.DiscoveryRequest(type_url=EDS, resource_names=NAMES)
    located.resource_locators.add(name="x")
    assert not SotwRequest(located.SerializeToString()).names_are(sub)


def test_random_requests_agree_with_a_full_parse() -> None:
    rng = random.Random(7)
    subs = Subscriptions()
    pool = NAMES[:20]
    held = [subs.get(rng.sample(pool, rng.randint(0, 6))) for _ in range(30)]
    for _ in range(2000):
        names = tuple(rng.sample(pool, rng.randint(0, 6)))
        fields: dict[str, object] = {}
        if rng.random() < 0.5:
            fields["version_info"] = rng.choice(["", "v", "v" * 200])
        if rng.random() < 0.5:
            fields["response_nonce"] = str(rng.randint(0, 10**6))
        if rng.random() < 0.2:
            fields["node"] = base_pb2.Node(id=rng.choice(["", "a", "b" * 300]))
        data = request(names, **fields)
        canonical = rng.random() < 0.8
        if not canonical:  # a field repeated (the last one wins): may not match, never lies
            data += discovery_pb2.DiscoveryRequest(type_url=EDS).SerializeToString()
        r = SotwRequest(data)
        for sub in held:
            same = discovery_pb2.DiscoveryRequest.FromString(data).resource_names == list(
                sub.raw)
            assert r.names_are(sub) == same if canonical else (same or not r.names_are(sub))


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_request_holds_its_bytes_once() -> None:
    """upb keeps the fields its message type does not know (the names) inside the
    parsed head: a request that kept the head held every ACK twice."""
    names = tuple(f"outbound|9080||svc-{i}.ns.svc.cluster.local" for i in range(3000))
    data = request(names, response_nonce="7", version_info="v1")  # ~140 kB, shared
    before = _rss_mb()
    held = [SotwRequest(data) for _ in range(400)]  # a second copy each: +56 MB
    grown = _rss_mb() - before
    assert all(r.response_nonce == "7" for r in held)
    assert grown < 20, f"{grown:.0f} MB for 400 requests over one shared buffer"
