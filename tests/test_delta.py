"""Incremental xDS on the exact responses: only what changed, removals by name,
subscriptions by name, and nothing resent that a reconnecting proxy already holds."""

from __future__ import annotations

import time
from typing import Any

import pytest

from controlplane.status.sync import Status
from controlplane.xds import types
from tests.ads_client import CATCH_ALL_CLUSTERS, DeltaClient, delta_names
from tests.conftest import apply_docs, delete_docs
from tests.harness import ControlPlane, wait_until
from tests.manifests import destination_rule, pod, service

REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"
RATINGS = "outbound|9080||ratings.default.svc.cluster.local"


@pytest.fixture
def plane(cp: ControlPlane) -> ControlPlane:
    apply_docs(cp, service("reviews", 9080), service("ratings", 9080),
               pod("reviews-1", "127.1.0.1", {"app": "reviews"}),
               pod("ratings-1", "127.1.0.2", {"app": "ratings"}))
    wait_until(lambda: {REVIEWS, RATINGS} <= cp.cluster_names())
    return cp


@pytest.fixture
def client(plane: ControlPlane) -> Any:
    c = DeltaClient(plane.port, "delta-1", {"INSTANCE_IPS": "127.0.9.2"})
    plane.call(c.open())
    yield c
    plane.call(c.close())


def connect(plane: ControlPlane, c: DeltaClient) -> dict[str, Any]:
    """CDS (wildcard), EDS for both clusters, LDS, RDS; every response ACKed."""
    run = plane.call
    run(c.delta(types.CLUSTER))
    cds = run(c.recv())
    assert sorted(delta_names(cds)) == [*CATCH_ALL_CLUSTERS, RATINGS, REVIEWS]
    assert not cds.removed_resources
    run(c.delta(types.ENDPOINT, [REVIEWS, RATINGS]))
    run(c.ack_delta(cds))
    eds = run(c.recv())
    assert sorted(delta_names(eds)) == [RATINGS, REVIEWS]
    run(c.ack_delta(eds))
    run(c.delta(types.LISTENER))
    lds = run(c.recv())
    assert delta_names(lds) == ["127.0.9.2_9080"]
    run(c.delta(types.ROUTE, ["9080"]))
    run(c.ack_delta(lds))
    rds = run(c.recv())
    assert delta_names(rds) == ["9080"]
    run(c.ack_delta(rds))
    assert plane.silent(c)
    return {"cds": cds, "eds": eds, "lds": lds, "rds": rds}


def test_endpoint_change_sends_only_that_assignment(plane: ControlPlane,
                                                    client: DeltaClient) -> None:
    connect(plane, client)
    apply_docs(plane, pod("reviews-2", "127.1.0.9", {"app": "reviews"}))
    update = plane.call(client.recv())
    assert update.type_url == types.ENDPOINT and delta_names(update) == [REVIEWS]
    assert not update.removed_resources
    plane.call(client.ack_delta(update))
    assert plane.silent(client)


def test_deletion_is_a_removed_resource_after_routes_moved(plane: ControlPlane,
                                                           client: DeltaClient) -> None:
    connect(plane, client)
    delete_docs(plane, service("ratings", 9080))
    lds_or_rds = []
    while True:
        resp = plane.call(client.recv())
        plane.call(client.ack_delta(resp))
        if resp.type_url == types.CLUSTER and resp.removed_resources:
            break
        assert not resp.removed_resources or resp.type_url != types.CLUSTER
        lds_or_rds.append(types.short(resp.type_url))
    assert list(resp.removed_resources) == [RATINGS]
    assert "RDS" in lds_or_rds  # the routes went first: make before break


def test_unsubscribe_and_resubscribe(plane: ControlPlane, client: DeltaClient) -> None:
    run = plane.call
    connect(plane, client)
    run(client.delta(types.ENDPOINT, unsubscribe=[RATINGS]))
    assert plane.silent(client)
    apply_docs(plane, pod("ratings-2", "127.1.0.8", {"app": "ratings"}))
    assert plane.silent(client)  # no longer subscribed: nothing sent
    run(client.delta(types.ENDPOINT, [RATINGS]))
    again = run(client.recv())
    assert delta_names(again) == [RATINGS]


def test_reconnect_with_initial_versions_resends_only_what_changed(
        plane: ControlPlane, client: DeltaClient) -> None:
    first = connect(plane, client)
    held = {r.name: r.version for r in first["cds"].resources}
    plane.call(client.close())
    wait_until(lambda: not plane.registry.by_node("delta-1"))
    apply_docs(plane, destination_rule("reviews", "reviews", {"v1": {"version": "v1"}}))
    wait_until(lambda: "outbound|9080|v1|reviews.default.svc.cluster.local"
               in plane.cluster_names())
    again = DeltaClient(plane.port, "delta-1", {"INSTANCE_IPS": "127.0.9.2"})
    plane.call(again.open())
    plane.call(again.delta(types.CLUSTER, initial=held))
    cds = plane.call(again.recv())
    # The two clusters it holds are unchanged: only the new subset cluster is sent.
    assert delta_names(cds) == ["outbound|9080|v1|reviews.default.svc.cluster.local"]
    plane.call(again.close())


def test_nack_is_recorded_and_never_resent(plane: ControlPlane, client: DeltaClient) -> None:
    run = plane.call
    connect(plane, client)
    apply_docs(plane, service("details", 9080))
    update = run(client.recv())
    assert update.type_url == types.CLUSTER
    run(client.delta(types.CLUSTER, nonce=update.nonce, error="details: no"))
    # Routes for the new host may follow; the rejected clusters are never sent again.
    seen = plane.drain(client)
    assert types.CLUSTER not in [r.type_url for r in seen], seen
    [sync] = plane.registry.by_node("delta-1")
    assert sync.types[types.CLUSTER].nack.message == "details: no"


def test_a_change_affecting_no_subscription_sends_nothing(plane: ControlPlane,
                                                          client: DeltaClient) -> None:
    run = plane.call
    connect(plane, client)
    run(client.delta(types.ENDPOINT, unsubscribe=[REVIEWS, RATINGS]))
    assert plane.silent(client)
    apply_docs(plane, pod("reviews-3", "127.1.0.7", {"app": "reviews"}))
    assert plane.silent(client)


def test_reconnect_holding_a_resource_that_is_gone_gets_it_removed(
        plane: ControlPlane) -> None:
    """A proxy back from a control-plane restart may hold what no recent change names."""
    run = plane.call
    c = DeltaClient(plane.port, "delta-back")
    run(c.open())
    try:
        gone = "outbound|9080||gone.default.svc.cluster.local"
        run(c.delta(types.CLUSTER, initial={gone: "0123456789abcdef"}))
        cds = run(c.recv())
        assert sorted(delta_names(cds)) == [*CATCH_ALL_CLUSTERS, RATINGS, REVIEWS]
        assert list(cds.removed_resources) == [gone]
    finally:
        run(c.close())


def test_proxies_in_step_share_the_snapshots_state(plane: ControlPlane,
                                                   client: DeltaClient) -> None:
    """Memory per proxy: what an in-step proxy was sent and holds is the snapshot's own
    mapping, and its subscriptions are the set every other such proxy holds."""
    other = DeltaClient(plane.port, "delta-2", {"INSTANCE_IPS": "127.0.9.2"})
    plane.call(other.open())
    try:
        connect(plane, client)
        connect(plane, other)

        def state(node: str, type_url: str) -> Any:
            [sync] = plane.registry.by_node(node)
            return plane.ads.streams[sync.stream_id].states[type_url]

        snap = plane.run(lambda: plane.cache.snapshot)
        for t in (types.CLUSTER, types.ENDPOINT):
            a, b = state("delta-1", t), state("delta-2", t)
            items = snap.for_key(t, None).items
            wait_until(lambda a=a, b=b, items=items: a.acked is b.acked is items)
            assert a.sent is b.sent is items
        assert state("delta-1", types.ENDPOINT).names is state("delta-2", types.ENDPOINT).names
        # Unsubscribing makes a stream's state its own; the snapshot keeps every name.
        plane.call(client.delta(types.ENDPOINT, unsubscribe=[RATINGS]))
        eds = state("delta-1", types.ENDPOINT)
        wait_until(lambda: eds.names == {REVIEWS})
        assert RATINGS not in eds.sent and RATINGS not in eds.acked
        assert set(snap.for_key(types.ENDPOINT, None).items) == {REVIEWS, RATINGS}
        assert plane.silent(client)
    finally:
        plane.call(other.close())


def test_an_answer_to_a_nonce_never_sent_is_a_protocol_error(
        plane: ControlPlane, client: DeltaClient) -> None:
    run = plane.call
    events: list[str] = []
    plane.run(lambda: plane.registry.listeners.append(lambda e, p, t: events.append(e)))
    run(client.delta(types.CLUSTER))
    cds = run(client.recv())
    [sync] = plane.registry.by_node("delta-1")
    t = sync.types[types.CLUSTER]
    run(client.delta(types.CLUSTER, nonce="made-up"))
    wait_until(lambda: t.nack is not None, what="the protocol error recorded")
    assert t.nack is not None and t.nack.protocol_error
    assert t.nack.message == "ACK for nonce 'made-up' which was never sent"
    assert t.status(time.time(), 5.0) is Status.PENDING  # not SYNCED by it
    assert "protocol_error" in events and "nacked" not in events
    run(client.ack_delta(cds))
    wait_until(lambda: t.status(time.time(), 5.0) is Status.SYNCED)
    # A second answer to an answered nonce is stale: no error, no second ACK.
    acks = events.count("acked")
    run(client.ack_delta(cds))
    assert plane.silent(client)
    assert events.count("acked") == acks and events.count("protocol_error") == 1


def test_a_nack_of_an_older_response_names_its_version_and_generation(
        plane: ControlPlane, client: DeltaClient) -> None:
    """Several Delta responses may be in flight: a NACK names the one it answers, and
    the snapshot generation it was built from (for whoever traces the NACK)."""
    run = plane.call
    connect(plane, client)
    apply_docs(plane, pod("reviews-2", "127.1.0.8", {"app": "reviews"}))
    first = run(client.recv())
    first_generation = plane.generation()
    apply_docs(plane, pod("reviews-3", "127.1.0.9", {"app": "reviews"}))
    second = run(client.recv())
    assert first.type_url == second.type_url == types.ENDPOINT
    assert first.system_version_info != second.system_version_info
    run(client.delta(types.ENDPOINT, nonce=first.nonce, error="endpoints: no"))
    [sync] = plane.registry.by_node("delta-1")
    t = sync.types[types.ENDPOINT]
    wait_until(lambda: t.nack is not None, what="the NACK recorded")
    assert t.nack is not None and not t.nack.protocol_error
    assert t.nack.version == first.system_version_info
    assert t.nack.generation == first_generation < t.sent_generation


def test_a_reconnect_holding_everything_gets_an_empty_answer_and_is_synced(
        plane: ControlPlane, client: DeltaClient) -> None:
    """Nothing changed while it was away: each type it asks for is answered with no
    resources, and its ACK shows the type SYNCED (not NOT SENT, a proxy waiting). What
    it reported holding is shown as the resources themselves."""
    run = plane.call
    first = connect(plane, client)
    held = {k: {r.name: r.version for r in first[k].resources} for k in ("cds", "eds")}
    run(client.close())
    wait_until(lambda: not plane.registry.by_node("delta-1"))
    again = DeltaClient(plane.port, "delta-1", {"INSTANCE_IPS": "127.0.9.2"})
    run(again.open())
    try:
        run(again.delta(types.CLUSTER, initial=held["cds"]))
        cds = run(again.recv())
        assert cds.type_url == types.CLUSTER
        assert not cds.resources and not cds.removed_resources
        run(again.delta(types.ENDPOINT, [REVIEWS], initial={REVIEWS: held["eds"][REVIEWS]}))
        run(again.ack_delta(cds))
        eds = run(again.recv())
        assert eds.type_url == types.ENDPOINT
        assert not eds.resources and not eds.removed_resources
        run(again.ack_delta(eds))
        assert plane.silent(again)
        [sync] = plane.registry.by_node("delta-1")
        for t in (types.CLUSTER, types.ENDPOINT):
            assert sync.types[t].status(time.time(), 5.0) is Status.SYNCED
        assert [r.name for r in sync.types[types.ENDPOINT].acked_resources.values()] == [
            REVIEWS]
        assert all(r.body for r in sync.types[types.ENDPOINT].acked_resources.values())
    finally:
        run(again.close())
