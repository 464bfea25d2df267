"""Istio's traffic-management tasks as a regression suite: our own Bookinfo
(tests/bookinfo/: productpage, details, reviews v1/v2/v3, ratings, each pod a real HTTP
server on a loopback address, tests/bookinfo_apps.py), the control plane watching a
directory, and one real Envoy that every app calls through. Each task applies its
manifests live, as `kubectl apply -f` would, waits until the sidecar holds them, and
asserts the outcome Istio's task pages describe.

The apps call one another through the same sidecar (a Bookinfo pod's outbound calls go
through its own sidecar; here every pod shares one): the client asks productpage, which
asks details and reviews, and reviews v2/v3 ask ratings. Every request carries a trace
header the apps pass on, so "ratings never saw it" is asked of one request only.
"""

from __future__ import annotations

import concurrent.futures
import math
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controlplane.model.meta import Key
from controlplane.model.parse import Object, key_of, parse_object
from controlplane.status.convergence import Convergence
from tests.bookinfo_apps import (
    RATINGS_UNAVAILABLE,
    REVIEWS_UNAVAILABLE,
    TRACE,
    App,
    Sidecar,
)
from tests.harness import ControlPlane, Envoy, http_request, wait_until

pytestmark = pytest.mark.e2e

MANIFESTS = Path(__file__).parent / "bookinfo"
PORT = 9080  # every Bookinfo service's port, and the pods' too
SIDECAR_IP = {"sotw": "127.0.15.2", "delta": "127.0.15.3"}
DETAILS_V1_CLUSTER = "outbound|9080|v1|details.default.svc.cluster.local"


def manifest(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / f"{name}.yaml").read_text()) if d]


def two_sided_bound(n: int, alpha: float) -> int:
    """The largest k with P(X <= k) + P(X >= n - k) < alpha for X ~ Binomial(n, 1/2):
    a fair split of n requests lands in (k, n - k) except with probability < alpha."""
    cumulative, k = 0.0, -1
    while True:
        cumulative += math.comb(n, k + 1) / 2 ** n
        if 2 * cumulative >= alpha:
            return k
        k += 1


# -- the mesh ------------------------------------------------------------------------------

class Bookinfo:
    """The control plane, its watched directory, our Bookinfo's apps and one sidecar.
    `apply` and `delete` change the directory as `kubectl apply -f`/`delete -f` change
    the cluster (one file per object) and return once the sidecar holds the result."""

    def __init__(self, plane: ControlPlane, config: Path, apps: dict[str, App],
                 sidecar: Sidecar, envoy: Envoy) -> None:
        self.plane, self.config, self.apps = plane, config, apps
        self.sidecar, self.envoy = sidecar, envoy

    # -- changes ------------------------------------------------------------------------------
    def _path(self, key: Key) -> Path:
        return self.config / f"{key.kind}-{key.namespace}-{key.name}.yaml".lower()

    def apply(self, *names: str) -> None:
        expected: dict[Key, Object | None] = {}
        for name in names:
            for doc in manifest(name):
                obj = parse_object(doc)
                expected[key_of(obj)] = obj
                path = self._path(key_of(obj))
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
                tmp.replace(path)  # whole, as an editor saves
        self.converge(expected)

    def delete(self, kind: str) -> None:
        """Delete every object of a kind (a task's cleanup)."""
        expected: dict[Key, Object | None] = {}
        for obj in self.plane.run(lambda: self.plane.store.objects(kind)):
            key = key_of(obj)
            expected[key] = None
            self._path(key).unlink()
        self.converge(expected)

    def converge(self, expected: dict[Key, Object | None]) -> None:
        """Wait until the control plane published these objects (as given, not rejected)
        and the sidecar answered every push of that snapshot: Envoy sends its ACK after it
        applied a response, and with one worker thread (`concurrency=1`) the worker takes
        the new configuration before any request the test sends afterwards."""
        store = self.plane.store

        def published() -> int:
            if store.unpublished or any(store.get(k) != o for k, o in expected.items()):
                return 0
            snap = self.plane.cache.snapshot
            return snap.generation if snap else 0
        generation = wait_until(lambda: self.plane.run(published), 10,
                                what=f"the control plane publishing {sorted(map(str, expected))}")
        rejected = self.plane.run(lambda: {k: r.reason for k, r in store.rejections.items()
                                           if k in expected})
        assert not rejected, rejected

        def answered() -> bool:
            [proxy] = self.plane.registry.by_node(self.envoy.node_id)
            nacks = [t.nack.message for t in proxy.types.values()
                     if t.nack is not None and t.nack.generation >= generation]
            assert not nacks, nacks
            return Convergence.converged(proxy, generation)
        wait_until(lambda: self.plane.run(answered), 10,
                   what=f"the sidecar taking generation {generation}")

    def reset(self) -> None:
        """Back to Bookinfo with its DestinationRules and no VirtualService."""
        self.delete("VirtualService")
        self.apply("destination-rule-all")

    # -- requests -------------------------------------------------------------------------------
    def get(self, host: str, user: str = "", timeout: float = 30.0
            ) -> tuple[str, int, dict[str, str], Any]:
        """One request through the sidecar, as a client in the mesh sends it, with a trace
        of its own: (trace, status, headers, JSON body or text)."""
        trace = uuid.uuid4().hex
        headers = {TRACE: trace, **({"end-user": user} if user else {})}
        status, got, body = http_request(self.sidecar.ip, PORT, host, "/", headers,
                                         timeout=timeout)
        return trace, status, got, body

    def page(self, user: str = "") -> tuple[str, dict[str, Any]]:
        """productpage, as a browser (signed in as `user`) loads it."""
        trace, status, _, body = self.get("productpage", user)
        assert status == 200, (status, body)
        return trace, body

    def stat(self, name: str) -> int:
        return self.envoy.stats(name).get(name, 0)

    def fault_stat(self, name: str) -> int:
        return self.stat(f"http.outbound_{self.sidecar.ip}_{PORT}.fault.{name}")


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ControlPlane, Path,
                                                                     dict[str, App], Sidecar]]:
    config = tmp_path_factory.mktemp("bookinfo")
    sidecar = Sidecar()
    started: dict[str, App] = {}
    plane = ControlPlane(config)
    try:
        for doc in manifest("bookinfo"):
            if doc["kind"] == "Pod":
                labels = doc["metadata"]["labels"]
                name = f"{labels['app']}-{labels['version']}"
                started[name] = App(labels["app"], labels["version"], doc["metadata"]["name"],
                                    doc["status"]["podIP"], PORT, sidecar)
        yield plane, config, started, sidecar
    finally:
        for app in started.values():
            app.stop()
        plane.stop()


@pytest.fixture(scope="module", params=["sotw", "delta"])
def mesh(request: pytest.FixtureRequest, apps: Any) -> Iterator[Bookinfo]:
    """Bookinfo with one sidecar per xDS mode (the module's tasks run once with each)."""
    plane, config, started, sidecar = apps
    mode = str(request.param)
    sidecar.ip = SIDECAR_IP[mode]
    envoy = Envoy(f"bookinfo-{mode}", plane.port, instance_ip=sidecar.ip,
                  delta=mode == "delta", concurrency=1)
    try:
        envoy.wait_ready()
        bookinfo = Bookinfo(plane, config, started, sidecar, envoy)
        bookinfo.apply("bookinfo", "destination-rule-all")
        yield bookinfo
        assert envoy.update_rejected() == {}, "the sidecar rejected configuration"
    finally:
        envoy.stop()


@pytest.fixture
def bookinfo(mesh: Bookinfo) -> Iterator[Bookinfo]:
    """Each task starts as Istio's do: Bookinfo and its DestinationRules, no routing."""
    mesh.reset()
    yield mesh
    for app in mesh.apps.values():
        app.gate.open()


# -- the tasks -----------------------------------------------------------------------------

def test_request_routing_all_v1(bookinfo: Bookinfo) -> None:
    """Request routing: with every service routed to v1, the page always shows reviews
    v1, which has no stars (ratings is never called)."""
    bookinfo.apply("virtual-service-all-v1")
    for _ in range(20):
        trace, page = bookinfo.page()
        assert page["version"] == "v1" and page["details"]["version"] == "v1", page
        assert page["reviews"]["version"] == "v1" and "ratings" not in page["reviews"], page
        assert not bookinfo.apps["ratings-v1"].saw(trace)


def test_request_routing_by_end_user(bookinfo: Bookinfo) -> None:
    """Request routing by user identity: jason sees reviews v2 (black stars); anyone
    else, signed in or not, sees v1."""
    bookinfo.apply("virtual-service-all-v1", "virtual-service-reviews-jason-v2")
    for _ in range(10):
        _, page = bookinfo.page("jason")
        assert page["reviews"]["version"] == "v2", page
        assert page["reviews"]["ratings"] == {"stars": 5, "color": "black",
                                              "version": "v1"}, page
        for user in ("", "maria"):
            trace, page = bookinfo.page(user)
            assert page["reviews"]["version"] == "v1", (user, page)
            assert not bookinfo.apps["ratings-v1"].saw(trace)


def test_fault_injection_delay(bookinfo: Bookinfo) -> None:
    """Delay injection: jason's calls to ratings wait 7 s. reviews v2 would wait 10 s for
    them, but productpage gives reviews less (two attempts), so jason's page shows that
    reviews are unavailable: the timeouts bug Istio's task uncovers. The page is
    answered while ratings still has not seen either attempt; for others the page is
    unchanged."""
    bookinfo.apply("virtual-service-all-v1", "virtual-service-reviews-jason-v2")
    delays = bookinfo.fault_stat("delays_injected")
    bookinfo.apply("virtual-service-ratings-jason-delay")
    trace, page = bookinfo.page("jason")
    assert page["reviews"] == {"error": REVIEWS_UNAVAILABLE}, page
    assert page["reviews_attempts"] == [0, 0], page  # productpage's own timeout, twice
    assert len(bookinfo.apps["reviews-v2"].saw(trace)) == 2
    # Both of reviews v2's calls reached the sidecar, which holds them still.
    wait_until(lambda: bookinfo.fault_stat("delays_injected") == delays + 2, 10,
               what="both calls to ratings delayed")
    assert not bookinfo.apps["ratings-v1"].saw(trace)
    trace, page = bookinfo.page("maria")
    assert page["reviews"]["version"] == "v1", page


def test_fault_injection_abort(bookinfo: Bookinfo) -> None:
    """Abort injection: jason's calls to ratings are answered HTTP 500 by the sidecar,
    so his page says ratings are unavailable, at once; ratings never sees them. Others'
    pages are unchanged."""
    bookinfo.apply("virtual-service-all-v1", "virtual-service-reviews-jason-v2")
    aborts = bookinfo.fault_stat("aborts_injected")
    bookinfo.apply("virtual-service-ratings-jason-abort")
    trace, page = bookinfo.page("jason")
    assert page["reviews"]["version"] == "v2", page
    assert page["reviews"]["ratings"] == {"error": RATINGS_UNAVAILABLE, "status": 500,
                                          "body": "fault filter abort"}, page
    assert not bookinfo.apps["ratings-v1"].saw(trace)
    assert bookinfo.fault_stat("aborts_injected") == aborts + 1
    _, page = bookinfo.page("maria")
    assert page["reviews"]["version"] == "v1" and "ratings" not in page["reviews"], page


SHIFT_REQUESTS = 400
SHIFT_BOUND = two_sided_bound(SHIFT_REQUESTS, 1e-9)  # 138: a false failure < 1e-9


def test_traffic_shifting(bookinfo: Bookinfo) -> None:
    """Traffic shifting: all of reviews on v1, then half to v3 (red stars), then all."""
    bookinfo.apply("virtual-service-all-v1")
    bookinfo.apply("virtual-service-reviews-v1-v3-50")
    counts: Counter[str] = Counter()
    for _ in range(SHIFT_REQUESTS):
        _, status, _, body = bookinfo.get("reviews")
        assert status == 200, body
        counts[body["version"]] += 1
    assert set(counts) == {"v1", "v3"}, counts
    assert SHIFT_BOUND < counts["v1"] < SHIFT_REQUESTS - SHIFT_BOUND, counts
    bookinfo.apply("virtual-service-reviews-v3")
    for _ in range(20):
        _, page = bookinfo.page()
        assert page["reviews"]["version"] == "v3", page
        assert page["reviews"]["ratings"]["color"] == "red", page


def test_request_timeouts(bookinfo: Bookinfo) -> None:
    """Request timeouts: reviews v2 with ratings delayed 2 s answers, late; with a 0.5 s
    timeout on reviews the sidecar answers 504 while reviews still waits for ratings,
    and the page says reviews are unavailable."""
    bookinfo.apply("virtual-service-all-v1", "virtual-service-reviews-v2",
                   "virtual-service-ratings-delay-2s")
    started = time.monotonic()
    _, status, _, body = bookinfo.get("reviews")
    assert status == 200 and body["ratings"]["stars"] == 5, body
    assert time.monotonic() - started >= 1.9  # the delay is the feature: a lower bound
    bookinfo.apply("virtual-service-reviews-v2-timeout")
    trace, status, _, body = bookinfo.get("reviews")
    assert (status, body) == (504, "upstream request timeout")
    assert bookinfo.apps["reviews-v2"].holding(trace) == 1  # waiting for ratings
    assert not bookinfo.apps["ratings-v1"].saw(trace)  # which is still delayed
    _, page = bookinfo.page()
    assert page["reviews"] == {"error": REVIEWS_UNAVAILABLE}, page


def test_circuit_breaking(bookinfo: Bookinfo) -> None:
    """Circuit breaking: with one connection, one queued request and one request per
    connection, a third concurrent request is refused by the sidecar (503, overflow)
    and counted in the cluster's upstream_rq_pending_overflow. details holds every
    request until released, so the concurrency is certain, not a matter of timing."""
    bookinfo.apply("virtual-service-all-v1", "destination-rule-details-circuit-breaker")
    details = bookinfo.apps["details-v1"]
    prefix = f"cluster.{DETAILS_V1_CLUSTER}."
    overflows = bookinfo.stat(prefix + "upstream_rq_pending_overflow")
    details.gate.close()
    pool = concurrent.futures.ThreadPoolExecutor(2)
    try:
        first = pool.submit(bookinfo.get, "details")
        wait_until(lambda: details.in_progress() == 1, 10,
                   what="the first request held by details")
        second = pool.submit(bookinfo.get, "details")
        wait_until(lambda: bookinfo.stat(prefix + "upstream_rq_pending_active") == 1, 10,
                   what="the second request queued in the sidecar")
        _, status, headers, body = bookinfo.get("details", timeout=10)
    finally:
        details.gate.open()
        pool.shutdown()
    answers = [first.result(), second.result()]
    assert status == 503 and headers.get("x-envoy-overloaded") == "true", (status, body)
    assert "overflow" in body, body
    assert bookinfo.stat(prefix + "upstream_rq_pending_overflow") == overflows + 1
    assert [a[1] for a in answers] == [200, 200], answers  # the held and the queued one


def test_mirroring(bookinfo: Bookinfo) -> None:
    """Mirroring: reviews answered by v1 while v2 gets a copy of each request, its Host
    with -shadow appended; the copy is fire and forget: v2 holds it and the client's
    answer does not wait."""
    bookinfo.apply("virtual-service-all-v1")
    v2 = bookinfo.apps["reviews-v2"]
    trace, status, _, body = bookinfo.get("reviews")
    assert (status, body["version"]) == (200, "v1")
    assert not v2.saw(trace)
    bookinfo.apply("virtual-service-reviews-mirror-v2")
    v2.gate.close()
    trace, status, _, body = bookinfo.get("reviews", timeout=10)
    assert (status, body["version"]) == (200, "v1"), body  # while v2 holds its copy
    [copy] = wait_until(lambda: v2.saw(trace), 10, what="the copy reaching reviews v2")
    assert v2.holding(trace) == 1  # still: nobody waits for the copy's answer
    assert copy["headers"]["host"] == "reviews-shadow", copy
    [original] = bookinfo.apps["reviews-v1"].saw(trace)
    assert original["headers"]["host"] == "reviews", original
