"""How soon a change reaches real traffic through a real Envoy, and how soon Envoys are
back after the control plane was away, with the end-to-end tests' parts (tests/harness.py:
the control plane in a thread, with a file source polling every 50 ms and the tests'
debounce of 50 ms quiet / 0.5 s at most; upstream servers on loopback addresses). The
tests (tests/test_e2e.py, tests/test_hygiene.py) check that it happens; this measures it.

    python -m benchmarks.e2e_latency [--repeats 5 --outage 10 --delta]

- VirtualService edit: requests in a loop through a sidecar (tests/test_e2e.py Traffic);
  the route moved between reviews-v1 and reviews-v2 (100/0 <-> 0/100) by rewriting the
  file: the write -> the first answer from the new version, and -> the last answer from
  the old one.
- pod deleted: reviews-v1's Pod removed from the file while both pods take traffic (its
  server keeps answering): the write -> the last request that reached it.
- reconnect: 4 Envoys, the xDS server stopped for `--outage` s (tests/test_hygiene.py),
  then restarted on the same port: the restart -> each proxy's stream back.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.run import pct
from controlplane import log
from tests.harness import ControlPlane, Envoy, Upstream, get, iter_ips, wait_until, write_yaml
from tests.manifests import virtual_service, weighted
from tests.test_e2e import PORT, TARGET, Traffic, reviews_and_ratings, settled_on
from tests.test_hygiene import measure_reconnect

PROXIES = 4


def route_to(version: str) -> dict[str, object]:
    weights = {"v1": 100, "v2": 0} if version == "v1" else {"v1": 0, "v2": 100}
    return virtual_service("reviews", ["reviews"], [{"route": weighted("reviews", weights)}])


def first_and_last(log: list[tuple[float, int, str]], since: float, new: str, old: str
                   ) -> tuple[float, float]:
    """(first answer from `new`, last answer from `old`) after `since`, in seconds."""
    first = min(t for t, _, p in log if p == new and t >= since)
    last = max((t for t, _, p in log if p == old and t >= since), default=since)
    return first - since, last - since


def settled_on_first(sidecar: str) -> bool:
    body = get(sidecar, PORT, "reviews")[1]
    return isinstance(body, dict) and body["pod"] == "reviews-v1"


def traffic_moves(repeats: int, delta: bool, config: Path
                  ) -> tuple[list[float], list[float], list[float], int]:
    """(edit -> first new, edit -> last old, pod deleted -> last to it, failed requests)."""
    ips = iter_ips(10)
    addrs = {name: next(ips) for name in ("reviews-v1", "reviews-v2", "ratings-1")}
    upstreams = [Upstream(addr, TARGET, name.rpartition("-")[0], name,
                          version=name.rpartition("-")[2] if "-v" in name else "v1")
                 for name, addr in addrs.items()]
    mesh = config / "mesh.yaml"
    vs = config / "vs.yaml"
    write_yaml(mesh, *reviews_and_ratings(addrs))
    write_yaml(vs, route_to("v1"))
    plane: Any = ControlPlane(config)  # its ports are set once started
    sidecar = next(ips)
    proxy = Envoy("bench-e2e", plane.port, instance_ip=sidecar, delta=delta)
    first_new: list[float] = []
    last_old: list[float] = []
    deleted: list[float] = []
    failed = 0
    try:
        proxy.wait_ready()
        wait_until(lambda: settled_on_first(sidecar), 30, what="routing to reviews-v1")
        traffic = Traffic(sidecar, "reviews")
        try:
            old, new = "v1", "v2"
            for _ in range(repeats):
                wait_until(partial(settled_on, traffic, f"reviews-{old}"), 30)
                written = time.monotonic()
                write_yaml(vs, route_to(new))
                wait_until(partial(settled_on, traffic, f"reviews-{new}"), 30)
                f, last = first_and_last(traffic.log, written, f"reviews-{new}",
                                         f"reviews-{old}")
                first_new.append(f)
                last_old.append(last)
                old, new = new, old
            vs.unlink()  # both pods take traffic (round robin)
            for _ in range(repeats):
                wait_until(lambda: {p for _, _, p in traffic.log[-50:]}
                           >= {"reviews-v1", "reviews-v2"}, 30)
                written = time.monotonic()
                write_yaml(mesh, *[d for d in reviews_and_ratings(addrs)
                                   if d["metadata"]["name"] != "reviews-v1"])
                wait_until(lambda: settled_on(traffic, "reviews-v2"), 30)
                deleted.append(first_and_last(traffic.log, written, "reviews-v2",
                                              "reviews-v1")[1])
                write_yaml(mesh, *reviews_and_ratings(addrs))
        finally:
            failed = sum(1 for _, status, _ in traffic.stop() if status != 200)
    finally:
        proxy.stop()
        plane.stop()
        for u in upstreams:
            u.stop()
    return first_new, last_old, deleted, failed


def reconnects(repeats: int, outage: float, delta: bool) -> list[float]:
    plane: Any = ControlPlane()
    ips = iter_ips(50)
    proxies = [Envoy(f"bench-reconnect-{i}", plane.port, instance_ip=next(ips), delta=delta)
               for i in range(PROXIES)]
    back: list[float] = []
    try:
        for p in proxies:
            p.wait_ready()
        node_ids = [p.node_id for p in proxies]
        for _ in range(repeats):
            back += measure_reconnect(plane, node_ids, outage).values()
    finally:
        for p in proxies:
            p.stop()
        plane.stop()
    return back


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--outage", type=float, default=10.0, help="seconds the xDS server is away")
    p.add_argument("--delta", action="store_true", help="Envoys speak Delta xDS")
    a = p.parse_args(argv)
    log.configure("error")
    with tempfile.TemporaryDirectory(prefix="e2e-latency-") as tmp:
        first_new, last_old, deleted, failed = traffic_moves(a.repeats, a.delta, Path(tmp))
    back = reconnects(a.repeats, a.outage, a.delta)
    mode = "Delta" if a.delta else "SotW"
    print(f"real Envoy ({mode}), file source polled every 50 ms, debounce 50 ms / 0.5 s; "
          f"{a.repeats} repeats; seconds, median (min-max)")

    def row(name: str, xs: list[float]) -> None:
        print(f"  {name:<44} {statistics.median(xs):6.3f}  ({min(xs):.3f}-{max(xs):.3f})")
    row("VirtualService edit -> first answer from new", first_new)
    row("VirtualService edit -> last answer from old", last_old)
    row("Pod deleted -> last request to it", deleted)
    print(f"  failed requests during the changes: {failed}")
    print(f"  reconnect after a {a.outage:.0f} s outage ({len(back)} proxies x restarts): "
          f"p50 {pct(back, 50):.3f}  p99 {pct(back, 99):.3f}  max {max(back):.3f}")
    print(f"reproduce: .venv/bin/python -m benchmarks.e2e_latency --repeats {a.repeats} "
          f"--outage {a.outage:g}{' --delta' if a.delta else ''}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
