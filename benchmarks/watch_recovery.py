"""How soon the Kubernetes watchers are back after API-server trouble, against the API
server double (tests/kube/double.py) and the wired control plane (tests/harness.py), as
tests/test_watch.py runs them; the tests check the behaviour (retries within the backoff
cap, Retry-After left to the watchers), this measures the time.

    python -m benchmarks.watch_recovery [--repeats 5]

- outage: the server stops until every watcher failed 6 times (an uncapped backoff
  would have grown past 6 s), then starts again: per watcher, the server's start ->
  the watcher's first answer. The backoff is capped at 1 s, so about a second at most.
- initial sync: a fresh control plane starting -> its store synced, with the server
  answering the first Service LIST with 503 "Retry-After: 5" and without any fault.
  Honoured inside the request, that Retry-After cost 5 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.run import pct
from controlplane import log
from controlplane.sources.kubernetes import load_api_client
from tests.harness import ControlPlane, wait_until
from tests.kube.double import FakeApiServer
from tests.manifests import service


def start_plane(server: FakeApiServer, tmp: Path) -> ControlPlane:
    api = load_api_client(str(server.write_kubeconfig(tmp / "kubeconfig")))
    # tests/test_watch.py's settings: short watches, faults met within a second or two
    return ControlPlane(kubernetes={"api_client": api, "watch_timeout": 1,
                                    "read_timeout": 1.5, "crd_retry": 0.3})


def synced(plane: ControlPlane) -> bool:
    return bool(plane.run(lambda: plane.store.synced))  # type: ignore[attr-defined]


def outages(repeats: int, tmp: Path) -> list[float]:
    """Seconds from the server's start to each watcher's recovery, over all repeats."""
    back_after: list[float] = []
    with FakeApiServer(bookmark_interval=0.5) as server:
        for name in ("a", "b", "c"):
            server.upsert("v1", "Service", service(name, 80))
        plane = start_plane(server, tmp)
        try:
            wait_until(lambda: synced(plane), 30, what="initial sync")
            watchers = plane.kube.watchers  # type: ignore[attr-defined]  # set in setup
            for _ in range(repeats):
                server.stop()
                wait_until(lambda: all(w.failed_attempts >= 6 for w in watchers), 60,
                           what="every watcher failing for a while")
                server.start()
                started = time.monotonic()

                def recovered(since: float = started) -> bool:
                    return all((w.recovered_at or 0) > since for w in watchers)
                wait_until(recovered, 60, interval=0.005, what="every watcher recovered")
                back_after += [w.recovered_at - started for w in watchers]
        finally:
            plane.stop()
    return back_after


def initial_sync(tmp: Path, fault: bool) -> float:
    with FakeApiServer(bookmark_interval=0.5) as server:
        server.upsert("v1", "Service", service("a", 80))
        if fault:
            server.fail_next_list(kind="Service", code=503, retry_after=5)
        started = time.monotonic()
        plane = start_plane(server, tmp)
        try:
            wait_until(lambda: synced(plane), 60, interval=0.005, what="initial sync")
            return time.monotonic() - started
        finally:
            plane.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    log.configure("error")
    with tempfile.TemporaryDirectory(prefix="watch-recovery-") as tmp:
        back = outages(a.repeats, Path(tmp))
        clean = [initial_sync(Path(tmp), fault=False) for _ in range(a.repeats)]
        after_503 = [initial_sync(Path(tmp), fault=True) for _ in range(a.repeats)]
    print(f"API server double, {a.repeats} repeats; seconds, median (min-max)")
    print(f"  outage: server start -> watcher back ({len(back)} watcher recoveries)  "
          f"p50 {pct(back, 50):.3f}  p99 {pct(back, 99):.3f}  max {max(back):.3f}")
    for name, xs in (("initial sync", clean), ("initial sync, one 503 Retry-After: 5", after_503)):
        print(f"  {name:<38} {statistics.median(xs):6.3f}  ({min(xs):.3f}-{max(xs):.3f})")
    print(f"reproduce: .venv/bin/python -m benchmarks.watch_recovery --repeats {a.repeats}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
