"""The tests' stand-in pods die as real ones do: a stopped workload refuses new
connections and drops the established ones, so a test can tell when traffic is still
sent to a pod that is gone (a pooled keep-alive connection would hide it)."""

from __future__ import annotations

import http.client
from collections.abc import Callable

import pytest

from controlplane.samples.workload import Workload


def test_stop_closes_keep_alive_connections(ip: Callable[[], str]) -> None:
    address = ip()
    workload = Workload(address, 18080, "web", "web-0")
    conn = http.client.HTTPConnection(address, 18080, timeout=5)
    try:
        conn.request("GET", "/first")
        resp = conn.getresponse()
        assert resp.status == 200 and not resp.will_close  # kept alive
        resp.read()
        workload.stop()
        with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
            conn.request("GET", "/after-stop")
            conn.getresponse().read()
        assert [r["path"] for r in workload.requests] == ["/first"]
        with pytest.raises(ConnectionRefusedError):  # and nothing listens any more
            http.client.HTTPConnection(address, 18080, timeout=5).connect()
    finally:
        conn.close()
        workload.stop()  # a second stop is harmless
