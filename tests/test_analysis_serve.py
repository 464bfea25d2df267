"""`serve` analyses the published mesh continuously: /debug/analyze and the
controlplane_analysis_findings gauge follow the configuration as it changes."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.analysis_helpers import BASE
from tests.harness import ControlPlane, get, wait_until

ROUTE = """\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r, namespace: %s}
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route: [{destination: {host: %s}}]
"""


def analysis(plane: ControlPlane, query: str = "") -> Any:
    status, body = get("127.0.0.1", plane.http_port, "cp", f"/debug/analyze{query}")
    return body if status == 200 else None


def gauge(plane: ControlPlane, code: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{plane.http_port}/metrics",
                                timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(rf'^controlplane_analysis_findings\{{code="{code}",severity="\w+"\}} '
                      r"(\S+)$", text, re.M)
    assert found, f"no series for {code}"
    return float(found.group(1))


@pytest.fixture
def plane(tmp_path: Path) -> Any:
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "route.yaml").write_text(ROUTE % ("default", "reviewz"))
    plane = ControlPlane(tmp_path)
    yield plane
    plane.stop()


def test_findings_follow_the_published_mesh(plane: ControlPlane, tmp_path: Path) -> None:
    found = wait_until(lambda: analysis(plane), what="first analysis")
    [f] = [f for f in found if f["code"] == "CP0101"]
    assert f["object"] == {"kind": "VirtualService", "namespace": "default", "name": "r"}
    assert f["path"] == "spec.http[0].route[0].destination.host"
    # Where it is written, as analyze -f says it.
    assert (f["file"], f["line"]) == (str(tmp_path / "route.yaml"), 8)
    assert gauge(plane, "CP0101") == 1 and gauge(plane, "CP0150") == 0

    # Fixed: the finding and the gauge go, without a restart.
    (tmp_path / "route.yaml").write_text(ROUTE % ("default", "reviews"))
    wait_until(lambda: analysis(plane) == [], what="the finding to go")
    assert gauge(plane, "CP0101") == 0


def test_objects_the_source_refused(plane: ControlPlane, tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text((ROUTE % ("default", "reviews")).replace(
        "name: r,", "name: bad,").replace("  - route:", "  - timeout: 1.5x\n    route:"))
    found = wait_until(lambda: [f for f in analysis(plane, "?code=CP0001") or []],
                       what="the refused object")
    [f] = found
    assert f["object"]["name"] == "bad" and f["path"] == "spec.http[0].timeout"
    assert (f["file"], f["line"]) == (str(tmp_path / "bad.yaml"), 8)
    assert gauge(plane, "CP0001") == 1
    (tmp_path / "bad.yaml").unlink()
    wait_until(lambda: analysis(plane, "?code=CP0001") == [], what="it to go")


def test_filters(plane: ControlPlane, tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text((ROUTE % ("team", "gone")).replace("name: r,",
                                                                           "name: t,"))
    wait_until(lambda: len(analysis(plane, "?code=CP0101") or []) == 2, what="two findings")
    [f] = analysis(plane, "?code=CP0101&namespace=team")
    assert f["object"]["name"] == "t"
    assert analysis(plane, "?code=CP0112") == []
    assert {f["code"] for f in analysis(plane, "?namespace=team")} >= {"CP0101"}
