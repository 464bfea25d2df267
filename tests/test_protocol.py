"""The ADS conversation, asserted on the exact DiscoveryResponses."""

from __future__ import annotations

import asyncio
import gc
import re
import time
import weakref
from typing import Any

import grpc
import pytest
import structlog
from envoy.config.cluster.v3 import cluster_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.status.sync import Status, SyncRegistry
from controlplane.translation import MeshTranslation
from controlplane.xds import types, wire
from controlplane.xds.cache import Snapshot, SnapshotCache
from controlplane.xds.clientlog import JunkLog
from controlplane.xds.flow import Deadlines
from controlplane.xds.server import AdsServer
from controlplane.xds.sotw import SotwStream
from controlplane.xds.state import TypeState
from tests.ads_client import CATCH_ALL_CLUSTERS, AdsClient, decode, names_of
from tests.conftest import apply_docs
from tests.harness import ControlPlane, metric, wait_until
from tests.manifests import destination_rule, pod, service

REVIEWS = "outbound|9080||reviews.default.svc.cluster.local"
RATINGS = "outbound|9080||ratings.default.svc.cluster.local"


def mesh_docs() -> list[dict[str, Any]]:
    return [
        service("reviews", 9080), service("ratings", 9080),
        pod("reviews-1", "127.1.0.1", {"app": "reviews", "version": "v1"}),
        pod("ratings-1", "127.1.0.2", {"app": "ratings"}),
    ]


@pytest.fixture
def plane(cp: ControlPlane) -> ControlPlane:
    apply_docs(cp, *mesh_docs())
    wait_until(lambda: {REVIEWS, RATINGS} <= cp.cluster_names(), what="first snapshot")
    return cp


@pytest.fixture
def client(plane: ControlPlane) -> Any:
    c = AdsClient(plane.port, "sidecar-1", {"INSTANCE_IPS": "127.0.9.1"})
    plane.call(c.open())
    yield c
    plane.call(c.close())


def test_initial_push_in_order_and_ack_is_silent(plane: ControlPlane, client: AdsClient) -> None:
    run = plane.call
    run(client.send(types.CLUSTER))
    cds = run(client.recv())
    assert cds.type_url == types.CLUSTER
    assert sorted(names_of(cds)) == [*CATCH_ALL_CLUSTERS, RATINGS, REVIEWS]
    assert cds.version_info and cds.nonce
    run(client.send(types.ENDPOINT, [REVIEWS]))  # Envoy subscribes before it ACKs CDS
    run(client.ack(cds))
    eds = run(client.recv())
    assert eds.type_url == types.ENDPOINT and names_of(eds) == [REVIEWS]
    [cla] = decode(eds)
    ep = cla.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert (ep.address, ep.port_value) == ("127.1.0.1", 9080)
    run(client.ack(eds, [REVIEWS]))
    assert plane.silent(client)
    run(client.send(types.LISTENER))
    lds = run(client.recv())
    assert names_of(lds) == ["127.0.9.1_9080"]
    run(client.send(types.ROUTE, ["9080"]))
    run(client.ack(lds))
    rds = run(client.recv())
    assert names_of(rds) == ["9080"]
    run(client.ack(rds, ["9080"]))
    assert plane.silent(client)
    sync = plane.registry.by_node("sidecar-1")[0]
    for t in types.SHOWN:  # the types this client asked for
        assert sync.types[t].acked_nonce == sync.types[t].sent_nonce


def test_subscription_to_missing_name_is_answered_when_it_appears(
        plane: ControlPlane, client: AdsClient) -> None:
    run = plane.call
    future = "outbound|9080||details.default.svc.cluster.local"
    run(client.send(types.ENDPOINT, [future]))
    assert plane.silent(client)
    apply_docs(plane, service("details", 9080), pod("details-1", "127.1.0.3",
                                                    {"app": "details"}))
    eds = run(client.recv())
    assert names_of(eds) == [future]


def test_nack_is_recorded_and_never_resent(plane: ControlPlane, client: AdsClient) -> None:
    run = plane.call
    run(client.send(types.CLUSTER))
    first = run(client.recv())
    run(client.ack(first))
    apply_docs(plane, service("details", 9080))
    second = run(client.recv())
    assert second.version_info != first.version_info
    run(client.nack(second, first.version_info, "cluster details: bad things"))
    assert plane.silent(client)  # no resend of the rejected version
    sync = plane.registry.by_node("sidecar-1")[0]
    nack = sync.types[types.CLUSTER].nack
    assert nack is not None and nack.message == "cluster details: bad things"
    assert nack.version == second.version_info and nack.nonce == second.nonce
    apply_docs(plane, service("more", 9080))  # a new version is sent
    third = run(client.recv())
    assert third.version_info not in (first.version_info, second.version_info)


def test_stale_nonce_is_ignored(plane: ControlPlane, client: AdsClient) -> None:
    run = plane.call
    run(client.send(types.CLUSTER))
    first = run(client.recv())
    run(client.ack(first))
    apply_docs(plane, service("details", 9080))
    second = run(client.recv())
    # A NACK for the superseded response: stale, so neither recorded nor answered.
    run(client.nack(first, "", "too late"))
    assert plane.silent(client)
    sync = plane.registry.by_node("sidecar-1")[0]
    assert sync.types[types.CLUSTER].nack is None
    run(client.ack(second))
    assert sync.types[types.CLUSTER].sent_nonce == second.nonce
    wait_until(lambda: sync.types[types.CLUSTER].acked_nonce == second.nonce)


def clusters_and_endpoints_acked(plane: ControlPlane, client: AdsClient) -> Any:
    """CDS, then EDS for reviews and ratings, each answered with an ACK, as Envoy does;
    returns the EDS response."""
    run = plane.call
    run(client.send(types.CLUSTER))
    cds = run(client.recv())
    run(client.send(types.ENDPOINT, [REVIEWS, RATINGS]))
    run(client.ack(cds))
    eds = run(client.recv())
    run(client.ack(eds, [REVIEWS, RATINGS]))
    return eds


def test_endpoint_change_pushes_eds_alone(plane: ControlPlane, client: AdsClient) -> None:
    run = plane.call
    clusters_and_endpoints_acked(plane, client)
    run(client.send(types.LISTENER))
    lds = run(client.recv())
    run(client.ack(lds))
    assert plane.silent(client)
    apply_docs(plane, pod("reviews-2", "127.1.0.9", {"app": "reviews"}))
    update = run(client.recv())
    assert update.type_url == types.ENDPOINT
    assert names_of(update) == [REVIEWS]  # only the changed assignment
    [cla] = decode(update)
    assert {e.endpoint.address.socket_address.address
            for e in cla.endpoints[0].lb_endpoints} == {"127.1.0.1", "127.1.0.9"}
    run(client.ack(update, [REVIEWS, RATINGS]))
    assert plane.silent(client)


def test_eds_rerequest_after_cluster_change_is_answered(
        plane: ControlPlane, client: AdsClient) -> None:
    run = plane.call
    eds = clusters_and_endpoints_acked(plane, client)
    assert plane.silent(client)
    # The reviews cluster changes (a subset appears and the port turns HTTP/2): Envoy
    # rebuilds it and re-requests its endpoints with the old version and nonce.
    apply_docs(plane, {**service("reviews", 9080, port_name="grpc")},
               destination_rule("reviews", "reviews", {"v1": {"version": "v1"}}))
    cds2 = run(client.recv())
    assert cds2.type_url == types.CLUSTER
    run(client.send(types.ENDPOINT, [REVIEWS, RATINGS], eds.version_info, eds.nonce))
    run(client.ack(cds2))
    eds2 = run(client.recv())
    assert eds2.type_url == types.ENDPOINT
    assert REVIEWS in names_of(eds2)


def test_reconnect_gets_full_state(plane: ControlPlane, client: AdsClient) -> None:
    run = plane.call
    run(client.send(types.CLUSTER))
    cds = run(client.recv())
    run(client.ack(cds))
    run(client.close())
    wait_until(lambda: not plane.registry.by_node("sidecar-1"), what="disconnect")
    again = AdsClient(plane.port, "sidecar-1")
    run(again.open())
    run(again.send(types.CLUSTER, version=cds.version_info, nonce=""))
    cds2 = run(again.recv())
    assert cds2.version_info == cds.version_info
    assert sorted(names_of(cds2)) == sorted(names_of(cds))
    run(again.close())


def test_nothing_served_before_initial_load() -> None:
    cp = ControlPlane(pending_sources=("slow",))
    apply_docs(cp, *mesh_docs())
    c = AdsClient(cp.port, "early")
    cp.call(c.open())
    cp.call(c.send(types.CLUSTER))
    assert cp.silent(c)
    cp.run(lambda: cp.store.mark_synced("slow"))
    cds = cp.call(c.recv())
    assert sorted(names_of(cds)) == [*CATCH_ALL_CLUSTERS, RATINGS, REVIEWS]
    cp.call(c.close())
    cp.stop()


def test_removed_cluster_kept_until_routes_answered(
        plane: ControlPlane, client: AdsClient) -> None:
    """Make before break: a subset cluster the routes stop using disappears only after
    the proxy answered the new routes."""
    run = plane.call
    apply_docs(plane, destination_rule("reviews", "reviews", {"v1": {"version": "v1"}}))
    subset = "outbound|9080|v1|reviews.default.svc.cluster.local"
    wait_until(lambda: subset in plane.cluster_names())
    run(client.send(types.CLUSTER))
    cds = run(client.recv())
    assert subset in names_of(cds)
    run(client.ack(cds))
    run(client.send(types.LISTENER))
    lds = run(client.recv())
    run(client.send(types.ROUTE, ["9080"]))
    run(client.ack(lds))
    rds = run(client.recv())
    run(client.ack(rds, ["9080"]))
    assert plane.silent(client)
    plane.run(lambda: plane.store.delete(next(
        k for k in plane.store._objects if k.kind == "DestinationRule")))
    keep = run(client.recv())
    assert keep.type_url == types.CLUSTER and subset in names_of(keep)
    run(client.ack(keep))
    drop = run(client.recv())
    assert drop.type_url == types.CLUSTER and subset not in names_of(drop)
    run(client.ack(drop))


def test_bad_resource_never_reaches_a_consistent_snapshot(plane: ControlPlane) -> None:
    """A translation whose cluster names an endpoint assignment that does not exist is
    refused by the cache's consistency check; the previous snapshot stays."""

    class Broken(MeshTranslation):
        def messages(self, type_url: str, key: Any) -> list[Any]:
            out = list(super().messages(type_url, key))
            if type_url == types.CLUSTER:
                bad = cluster_pb2.Cluster(name="orphan", type=cluster_pb2.Cluster.EDS)
                bad.eds_cluster_config.service_name = "orphan"
                out.append(bad)
            return out

    before = plane.generation()
    with pytest.raises(Exception, match="missing"):
        plane.publish(Broken(plane.run(plane.store.mesh)))
    assert plane.generation() == before


def _eds_state(plane: ControlPlane, node: str) -> Any:
    [sync] = plane.registry.by_node(node)
    return plane.ads.streams[sync.stream_id].states[types.ENDPOINT]


def _snapshot_endpoints(plane: ControlPlane) -> Any:
    return plane.run(lambda: plane.cache.snapshot.for_key(types.ENDPOINT, None))


def test_proxies_in_step_share_the_snapshots_endpoint_state(plane: ControlPlane) -> None:
    """Memory per proxy: a proxy subscribed to every assignment and in step holds no
    copy of its own; one that subscribes to fewer, or rejected one, gets its own, and
    the snapshot's mapping is never written."""
    run = plane.call
    a = AdsClient(plane.port, "sidecar-a")
    b = AdsClient(plane.port, "sidecar-b")
    run(a.open())
    run(b.open())
    try:
        for c, names in ((a, [REVIEWS, RATINGS]), (b, [RATINGS, REVIEWS])):
            run(c.send(types.CLUSTER))
            cds = run(c.recv())
            run(c.send(types.ENDPOINT, names))
            run(c.ack(cds))
            eds = run(c.recv())
            assert sorted(names_of(eds)) == [RATINGS, REVIEWS]
            run(c.ack(eds, names))
        wait_until(lambda: _eds_state(plane, "sidecar-b").acked is
                   _eds_state(plane, "sidecar-b").sent)
        sa, sb = _eds_state(plane, "sidecar-a"), _eds_state(plane, "sidecar-b")
        snap = _snapshot_endpoints(plane)
        assert sa.names is sb.names  # the same names in another order: one set
        assert sa.sent is sb.sent is snap.items and sa.acked is snap.items

        apply_docs(plane, pod("reviews-2", "127.1.0.9", {"app": "reviews"}))
        ua, ub = run(a.recv()), run(b.recv())
        assert names_of(ua) == names_of(ub) == [REVIEWS]
        snap2 = _snapshot_endpoints(plane)
        assert list(snap2._subsets) == [(REVIEWS,)]  # both responses: one body, joined once
        # ...and one response, nonce included, named after the snapshot's generation
        assert ua.nonce == ub.nonce == f"{plane.generation()}.1"
        assert ua.SerializeToString() == ub.SerializeToString()
        assert sa.sent is snap2.items and sa.acked is snap.items  # not ACKed yet
        run(a.ack(ua, [REVIEWS, RATINGS]))
        wait_until(lambda: sa.acked is snap2.items)
        run(b.nack(ub, "", "reviews: rejected", [RATINGS, REVIEWS]))
        wait_until(lambda: sb.rejected == {REVIEWS})
        # b keeps the old reviews assignment; what it holds is its own now.
        run(b.send(types.ENDPOINT, [RATINGS]))  # and it drops reviews
        wait_until(lambda: sb.names == {RATINGS})
        assert type(sb.sent) is not dict and REVIEWS not in sb.sent
        assert REVIEWS not in sb.acked and not sb.rejected
        assert set(snap2.items) == {REVIEWS, RATINGS}  # untouched
        assert sa.sent is snap2.items
        assert plane.silent(b)
        sync_b = plane.registry.by_node("sidecar-b")[0]
        assert sync_b.types[types.ENDPOINT].names == (RATINGS,)
    finally:
        run(a.close())
        run(b.close())


def test_a_silent_proxy_gets_listeners_once_the_cds_answer_is_overdue() -> None:
    """Listeners wait for the CDS answer, but not forever: a proxy that never answers
    still gets the rest of its config after --answer-timeout."""
    # The timeout is long enough for the silence check to finish well inside it on a
    # loaded machine; the bound checked is only that listeners waited for it.
    plane = ControlPlane(answer_timeout=1.5)
    try:
        apply_docs(plane, *mesh_docs())
        wait_until(lambda: {REVIEWS, RATINGS} <= plane.cluster_names())
        c = AdsClient(plane.port, "silent-1", {"INSTANCE_IPS": "127.0.9.3"})
        plane.call(c.open())
        plane.call(c.send(types.CLUSTER))
        t = time.monotonic()
        assert plane.call(c.recv()).type_url == types.CLUSTER
        plane.call(c.send(types.LISTENER))  # CDS never answered
        assert plane.silent(c)  # the gate holds...
        lds = plane.call(c.recv(10.0))  # ...until the answer is overdue
        assert lds.type_url == types.LISTENER
        assert time.monotonic() - t >= 1.5
        plane.call(c.close())
    finally:
        plane.stop()


def test_large_responses_wait_for_a_place_until_an_answer_frees_one() -> None:
    """With one place (--large-push-limit 1), a second proxy's large response waits until
    the first proxy answered its own; a holder is never made to wait for its next large
    response (CDS then EDS, the CDS answer coming only after EDS), and a place comes
    back when its answer is overdue or its stream ends."""
    plane = ControlPlane(answer_timeout=1.5, large_push_limit=1)
    run = plane.call
    try:
        apply_docs(plane, *mesh_docs())
        wait_until(lambda: {REVIEWS, RATINGS} <= plane.cluster_names())
        plane.ads.large.threshold = 1  # every response counts as large here
        a = AdsClient(plane.port, "big-a", {"INSTANCE_IPS": "127.0.9.4"})
        b = AdsClient(plane.port, "big-b", {"INSTANCE_IPS": "127.0.9.5"})
        c = AdsClient(plane.port, "big-c", {"INSTANCE_IPS": "127.0.9.6"})
        for x in (a, b, c):
            run(x.open())
        run(a.send(types.CLUSTER))
        cds_a = run(a.recv())
        run(b.send(types.CLUSTER))
        assert plane.silent(b)  # a holds the only place
        text = plane.app.metrics.render().decode()
        assert metric(text, "controlplane_large_pushes_waiting") == 1
        assert metric(text, "controlplane_large_pushes_unanswered") == 1
        b_sync = plane.registry.by_node("big-b")[0]
        assert not b_sync.types[types.CLUSTER].sent_nonce  # NOT SENT while it waits
        run(a.send(types.ENDPOINT, [REVIEWS]))  # a holder's next large response: no wait
        eds_a = run(a.recv(1.0))
        assert names_of(eds_a) == [REVIEWS]
        run(a.ack(cds_a))
        assert plane.silent(b)  # a's EDS is still unanswered
        run(a.ack(eds_a, [REVIEWS]))
        cds_b = run(b.recv(1.0))  # both answered: b gets the place...
        assert cds_b.type_url == types.CLUSTER
        b_sent = time.monotonic()
        run(c.send(types.CLUSTER))
        assert plane.silent(c)  # ...and keeps it while its answer is due
        run(c.recv(10.0))  # b never answers: c gets the place once b's answer is overdue
        assert time.monotonic() - b_sent >= 1.0  # (1.5 s after b's CDS was sent)
        d = AdsClient(plane.port, "big-d", {"INSTANCE_IPS": "127.0.9.7"})
        run(d.open())
        run(d.send(types.CLUSTER))
        assert plane.silent(d)  # c holds it now
        run(c.close())  # a stream that ends gives its place back at once
        assert run(d.recv(1.0)).type_url == types.CLUSTER
        assert plane.ads.large.waiting == 0 and plane.ads.large.held == 1  # d's
        for x in (a, b, d):
            run(x.close())
    finally:
        plane.stop()


def test_an_overdue_answer_wakes_its_stream_and_an_answered_push_does_not() -> None:
    """The answer deadline wakes a stream only for its newest response of the type, still
    unanswered: waking every stream pushed to cost a sender pass per proxy after each push."""
    async def main() -> list[bool]:
        deadlines = Deadlines()
        now = time.monotonic()
        cases = []
        for answered, newest in ((False, True), (True, True), (False, False)):
            st = TypeState(nonce="7-2", answered=answered)
            event = asyncio.Event()
            deadlines.add(now + 0.05, event, st, "7-2" if newest else "7-1")
            cases.append(event)
        await asyncio.sleep(0.2)
        return [e.is_set() for e in cases]

    assert asyncio.run(main()) == [True, False, False]


def test_the_reader_keeps_no_request_while_it_waits_for_the_next() -> None:
    """grpc.aio's request iterator holds the last message until the next one comes: a
    SotW ACK of endpoints is 140 kB, and after an endpoint change every stream kept
    one. The reader reads with context.read() and lets each request go."""
    class Request:  # weakly referenceable
        type_url = "nothing"

    class Context:
        def __init__(self) -> None:
            self.queue: asyncio.Queue[Any] = asyncio.Queue()

        def peer(self) -> str:
            return "test"

        async def read(self) -> Any:
            return await self.queue.get()

    async def main() -> None:
        ctx = Context()

        shared = AdsServer(SnapshotCache(), SyncRegistry()).shared
        stream = SotwStream(shared, ctx)  # type: ignore[arg-type]
        seen: list[str] = []
        stream.on_request = lambda r: seen.append(r.type_url)  # type: ignore[method-assign]
        reader = asyncio.create_task(stream._read())
        request = Request()
        ref = weakref.ref(request)
        ctx.queue.put_nowait(request)
        del request
        for _ in range(5):
            await asyncio.sleep(0)
        gc.collect()
        assert seen == ["nothing"] and not reader.done()
        assert ref() is None  # handled, and not held while the next read waits
        ctx.queue.put_nowait(grpc.aio.EOF)
        await asyncio.wait_for(reader, 1)

    asyncio.run(main())


def test_a_shared_response_stays_while_single_use_ones_come_and_go() -> None:
    """A storm writes the same cluster set to every stream between each proxy's own
    listeners: the shared response is built once, whatever passes through meanwhile."""
    snap = Snapshot(generation=3, source=None)  # type: ignore[arg-type]
    clusters = wire.resource_entry(
        types.CLUSTER, cluster_pb2.Cluster(name="c").SerializeToString()) * 1000
    nonce, data = snap.response(types.CLUSTER, "v1", clusters)
    assert nonce == "3.1"
    for i in range(200):  # per-proxy listener sets, one each
        snap.response(types.LISTENER, f"l{i}", f"listener {i}".encode())
        assert snap.response(types.CLUSTER, "v1", clusters) == (nonce, data)
    parsed = discovery_pb2.DiscoveryResponse.FromString(data)
    assert (parsed.version_info, parsed.nonce, parsed.type_url) == ("v1", "3.1", types.CLUSTER)
    assert len(parsed.resources) == 1000


# -- protocol hygiene: answers that cannot be true, duplicate node ids, bad nodes, junk ----

def test_an_ack_of_a_version_never_sent_is_a_protocol_error(
        plane: ControlPlane, client: AdsClient) -> None:
    """The nonce is the current one, the version is not what it carried: never SYNCED,
    recorded like a NACK (with our message), emitted as protocol_error, not nacked."""
    run = plane.call
    events: list[str] = []
    plane.run(lambda: plane.registry.listeners.append(lambda e, p, t: events.append(e)))
    with structlog.testing.capture_logs() as logs:
        run(client.send(types.CLUSTER))
        cds = run(client.recv())
        run(client.send(types.CLUSTER, version="forged-version", nonce=cds.nonce))
        [sync] = plane.registry.by_node("sidecar-1")
        t = sync.types[types.CLUSTER]
        wait_until(lambda: t.nack is not None, what="the protocol error recorded")
    assert t.status(time.time(), 5.0) is Status.NACKED
    assert not t.acked_nonce
    assert t.nack is not None and t.nack.protocol_error and t.nack.nonce == cds.nonce
    assert t.nack.version == cds.version_info
    assert t.nack.message.startswith("ACK for version 'forged-version' which was never sent")
    assert "protocol_error" in events and "nacked" not in events and "acked" not in events
    [line] = [e for e in logs if e["event"] == "protocol_error"]
    assert line["log_level"] == "warning" and line["type"] == types.CLUSTER
    assert metric_count(plane, "acked", types.CLUSTER) == 0
    assert metric_count(plane, "nacked", types.CLUSTER) == 0
    assert metric_count(plane, "protocol_error", types.CLUSTER) == 1


def test_an_answer_to_a_nonce_never_sent_is_a_protocol_error(
        plane: ControlPlane, client: AdsClient) -> None:
    run = plane.call
    run(client.send(types.CLUSTER))
    cds = run(client.recv())
    [sync] = plane.registry.by_node("sidecar-1")
    t = sync.types[types.CLUSTER]
    for bogus in ("no-such-nonce", "999999-1", "1-999999", "99999999.1"):
        run(client.send(types.CLUSTER, version=cds.version_info, nonce=bogus))
        wait_until(lambda b=bogus: t.nack is not None and t.nack.nonce == b,
                   what=f"the answer to {bogus} recorded")
        assert t.nack is not None and t.nack.protocol_error
        assert t.nack.message == f"ACK for nonce {bogus!r} which was never sent"
        assert t.status(time.time(), 5.0) is Status.PENDING  # not SYNCED by it
    run(client.ack(cds))  # the real answer still counts
    wait_until(lambda: t.status(time.time(), 5.0) is Status.SYNCED)


def metric_count(plane: ControlPlane, event: str, type_url: str) -> int:
    return int(plane.run(lambda: plane.app.metrics.xds.counts[event][type_url]))


def test_an_eds_re_request_is_not_counted_as_a_second_ack(
        plane: ControlPlane, client: AdsClient) -> None:
    """After a cluster change Envoy repeats its last EDS answer (same version and
    nonce): an ACK is counted once per response, so ACKs never outnumber pushes."""
    run = plane.call
    eds = clusters_and_endpoints_acked(plane, client)
    assert plane.silent(client)
    assert metric_count(plane, "acked", types.ENDPOINT) == 1
    apply_docs(plane, service("reviews", 9080, port_name="grpc"))  # the cluster changes
    cds2 = run(client.recv())
    run(client.send(types.ENDPOINT, [REVIEWS, RATINGS], eds.version_info, eds.nonce))
    run(client.ack(cds2))
    eds2 = run(client.recv())
    run(client.ack(eds2, [REVIEWS, RATINGS]))
    # Envoy repeats its answer to the current response too, e.g. once the rebuilt
    # cluster warmed: the same request again, nothing new to count.
    run(client.ack(eds2, [REVIEWS, RATINGS]))
    assert plane.silent(client)
    assert metric_count(plane, "sent", types.ENDPOINT) == 2
    assert metric_count(plane, "acked", types.ENDPOINT) == 2
    [sync] = plane.registry.by_node("sidecar-1")
    assert sync.types[types.ENDPOINT].nack is None


def test_a_second_stream_with_a_node_id_keeps_its_own_row(plane: ControlPlane,
                                                          client: AdsClient) -> None:
    """Rows are per stream (Envoy's hot restart and a reconnect racing the old stream's
    end both hold two): a stream claiming a connected proxy's node id cannot touch that
    proxy's row, and the claim is logged."""
    run = plane.call
    run(client.send(types.CLUSTER))
    cds = run(client.recv())
    run(client.ack(cds))
    forger = AdsClient(plane.port, "sidecar-1")
    run(forger.open())
    try:
        with structlog.testing.capture_logs() as logs:
            run(forger.send(types.CLUSTER))
            forged = run(forger.recv())
            run(forger.nack(forged, "", "forged rejection"))
            wait_until(lambda: len(plane.registry.by_node("sidecar-1")) == 2
                       and plane.registry.by_node("sidecar-1")[1].types[types.CLUSTER].nack,
                       what="the second stream's NACK")
        first, second = plane.registry.by_node("sidecar-1")
        assert first.stream_id < second.stream_id
        assert first.types[types.CLUSTER].nack is None
        assert first.types[types.CLUSTER].status(time.time(), 5.0) is Status.SYNCED
        nack = second.types[types.CLUSTER].nack
        assert nack is not None and nack.message == "forged rejection"
        [dup] = [e for e in logs if e["event"] == "duplicate_node_id"]
        assert dup["log_level"] == "warning" and dup["node"] == "sidecar-1"
        assert dup["stream"] == second.stream_id and dup["other_streams"] == [first.stream_id]
    finally:
        run(forger.close())
    wait_until(lambda: len(plane.registry.by_node("sidecar-1")) == 1)
    assert plane.registry.by_node("sidecar-1")[0] is first


@pytest.mark.parametrize(("kwargs", "details"), [
    ({"node_id": "n" * 15_000_000, "cluster": "c"},
     r"node.id is 15000000 characters, over the limit of 1024 characters"),
    ({"node_id": "ok", "cluster": "c" * 5000},
     r"node.cluster is 5000 characters, over the limit of 1024 characters"),
    ({"node_id": "ok", "metadata": {"BLOB": "m" * 100_000}},
     r"node.metadata is 1000\d\d bytes, over the limit of 65536 bytes"),
    ({"node_id": "ok", "user_agent_name": "u" * 300_000},  # no single field's limit
     r"node is 300\d\d\d bytes, over the limit of 262144 bytes"),
])
def test_an_oversized_node_is_refused_naming_the_limit(
        plane: ControlPlane, kwargs: dict[str, Any], details: str) -> None:
    run = plane.call
    node_id, user_agent = kwargs.pop("node_id"), kwargs.pop("user_agent_name", "")
    big = AdsClient(plane.port, node_id, **kwargs)
    big.node.user_agent_name = user_agent
    run(big.open())
    try:
        with structlog.testing.capture_logs() as logs:
            run(big.send(types.CLUSTER))
            code, text = run(big.status())
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert re.fullmatch(details, text), text
        assert not plane.registry.proxies
        [line] = [e for e in logs if e["event"] == "node_rejected"]
        assert line["log_level"] == "warning"
        # The value is logged clipped: no line carries the client's megabytes.
        assert all(len(repr(e)) < 2000 for e in logs), max(len(repr(e)) for e in logs)
    finally:
        run(big.close())


def test_junk_requests_are_logged_once_then_counted(plane: ControlPlane,
                                                    client: AdsClient) -> None:
    run = plane.call
    junk = "type.googleapis.com/no.such.Type"
    with structlog.testing.capture_logs() as logs:
        for _ in range(50):
            run(client.send(junk))
        run(client.send(types.CLUSTER))
        run(client.recv())  # every junk request was read before this answer
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
            "unsupported_type"]
        run(client.close())
        wait_until(lambda: not plane.registry.proxies, what="the stream ended")
        warnings = [e for e in logs if e["event"] == "unsupported_type"]
    assert len(warnings) == 2, warnings
    assert warnings[0]["type"] == junk and "suppressed" not in warnings[0]
    assert warnings[1]["suppressed"] == 49 and warnings[1]["stream_ended"]


def test_junk_log_repeats_a_count_at_most_once_per_interval() -> None:
    now = [100.0]
    junk = JunkLog(interval=60.0, clock=lambda: now[0])
    with structlog.testing.capture_logs() as logs:
        for _ in range(10):
            junk.warn("unsupported_type", "t1", stream=1)
        junk.warn("unsupported_type", "t2", stream=1)  # another type: its own first line
        now[0] += 60.0
        junk.warn("unsupported_type", "t1", stream=1)
        junk.warn("unsupported_type", "t1", stream=1)
        for i in range(JunkLog.KEYS + 5):  # endless distinct types share one count
            junk.warn("unsupported_type", f"many-{i}", stream=1)
        junk.flush(stream=1)
    lines = [(e["type"], e.get("suppressed"), e.get("stream_ended", False)) for e in logs]
    assert lines[:3] == [("t1", None, False), ("t2", None, False), ("t1", 9, False)]
    assert ("t1", 1, True) in lines
    assert len(logs) == 3 + (JunkLog.KEYS - 2) + 1 + 1 + 1, lines  # firsts, shared, flushes
    # 30 firsts fill the 32 kept; the 7 types after share one: its first line, 6 counted
    assert lines[-1] == ("(other types)", 6, True)
