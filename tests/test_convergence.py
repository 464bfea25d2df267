"""Convergence on the sync registry alone: when a generation counts as converged, and
that each event costs a look at its own proxy, not at every proxy."""

from __future__ import annotations

import pytest

from controlplane.model.proxy import ProxyView
from controlplane.status.convergence import Convergence
from controlplane.status.sync import ProxySync, SyncRegistry

EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def connect(registry: SyncRegistry, stream_id: int) -> int:
    registry.opened(stream_id, "", ProxyView(node_id=f"p-{stream_id}", cluster="c"))
    return stream_id


def push(registry: SyncRegistry, p: int, generation: int, nonce: str) -> None:
    registry.sent(p, EDS, "v", nonce, generation)
    registry.pass_done(p, generation)


def setup(n: int) -> tuple[SyncRegistry, Convergence, list[float], list[int]]:
    registry = SyncRegistry()
    observed: list[float] = []
    conv = Convergence(registry, observed.append)
    proxies = [connect(registry, i) for i in range(n)]
    return registry, conv, observed, proxies


def test_converged_once_every_proxy_passed_and_answered() -> None:
    registry, conv, observed, (a, b) = setup(2)
    conv.published(1, change_seen=0.0)
    push(registry, a, 1, "a-1")
    push(registry, b, 1, "b-1")
    registry.acked(a, EDS, "v", "a-1", {})
    assert observed == []  # b has not answered
    registry.nacked(b, EDS, "v", "b-1", "bad")  # a NACK is an answer
    assert len(observed) == 1 and not conv.pending


def test_a_proxy_with_nothing_to_send_converges_on_its_pass() -> None:
    registry, conv, observed, (a,) = setup(1)
    conv.published(3, change_seen=0.0)
    registry.pass_done(a, 3)
    assert len(observed) == 1


def test_disconnected_and_late_proxies_do_not_hold_a_generation() -> None:
    registry, conv, observed, (a, b) = setup(2)
    conv.published(1, change_seen=0.0)
    push(registry, a, 1, "a-1")
    registry.acked(a, EDS, "v", "a-1", {})
    connect(registry, 9)  # connected after the publish: never behind it
    registry.closed(b)
    assert len(observed) == 1


def test_generations_are_observed_in_order() -> None:
    registry, conv, observed, (a,) = setup(1)
    conv.published(1, change_seen=0.0)
    conv.published(2, change_seen=0.0)
    push(registry, a, 2, "a-2")  # the pass for 2 covers 1 too
    assert observed == []
    registry.acked(a, EDS, "v", "a-2", {})
    assert len(observed) == 2 and not conv.pending


def test_each_event_looks_at_its_own_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 300
    registry, conv, observed, proxies = setup(n)
    calls = 0
    real = Convergence.converged

    def counting(p: ProxySync, generation: int) -> bool:
        nonlocal calls
        calls += 1
        return real(p, generation)
    monkeypatch.setattr(Convergence, "converged", staticmethod(counting))
    conv.published(1, change_seen=0.0)
    for p in proxies:  # passes and answers in connection order, as a push goes
        push(registry, p, 1, f"{p}-1")
        registry.acked(p, EDS, "v", f"{p}-1", {})
    assert len(observed) == 1
    assert calls <= 3 * n  # the publish, then one look per pass and per answer


def test_a_later_generation_waits_for_the_older_to_be_observed() -> None:
    registry, conv, observed, (a, b) = setup(2)
    conv.published(1, change_seen=0.0)
    push(registry, a, 1, "a-1")  # a has not answered 1...
    registry.pass_done(b, 1)
    conv.published(2, change_seen=0.0)
    registry.pass_done(a, 2)  # ...and 2 had nothing for it: 2 is done for a
    registry.pass_done(b, 2)
    assert observed == [] and conv.pending[2][1] == set()  # but observed after 1
    registry.acked(a, EDS, "v", "a-1", {})
    assert len(observed) == 2
