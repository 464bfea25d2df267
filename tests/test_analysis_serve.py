"""`serve` analyses the published mesh continuously: /debug/analyze and the
controlplane_analysis_findings gauge follow the configuration as it changes."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from controlplane.model.meta import Key
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


EXTRA = """\
apiVersion: v1
kind: Service
metadata: {name: extra, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: %d}]
"""


def test_what_only_the_files_say(plane: ControlPlane, tmp_path: Path) -> None:
    """Kinds not served (CP0003, CP0004) and objects two files define differently
    (CP0005) are reported as `analyze -f` reports them, at their files and lines, and
    go when the files do, though neither changes what is published."""
    (tmp_path / "b-extra.yaml").write_text(EXTRA % 9080)
    wait_until(lambda: Key("Service", "default", "extra") in plane.store.published_objects(),
               what="b-extra.yaml served")
    # written later, so it is the one served, though its path sorts first
    (tmp_path / "a-extra.yaml").write_text("# one\n---\n" + EXTRA % 9081)
    (tmp_path / "kinds.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
        "metadata: {name: se, namespace: default}\nspec: {hosts: [x.example.com]}\n---\n"
        "apiVersion: networking.istio.io/v1\nkind: VirtualSevice\n"
        "metadata: {name: typo, namespace: default}\nspec: {}\n")

    def found() -> dict[str, dict[str, Any]] | None:
        by_code = {f["code"]: f for f in analysis(plane) or []
                   if f["code"] in ("CP0003", "CP0004", "CP0005")}
        return by_code if len(by_code) == 3 else None
    by_code = wait_until(found, what="CP0003, CP0004, CP0005")
    dup = by_code["CP0005"]
    assert dup["object"]["name"] == "extra"
    assert (dup["file"], dup["line"]) == (str(tmp_path / "b-extra.yaml"), 1)
    assert f"{tmp_path / 'a-extra.yaml'}:3, the definition served (the one written last)" \
        in dup["message"], dup
    assert (by_code["CP0004"]["object"]["name"], by_code["CP0004"]["file"],
            by_code["CP0004"]["line"]) == ("se", str(tmp_path / "kinds.yaml"), 2)
    assert (by_code["CP0003"]["object"]["name"], by_code["CP0003"]["line"]) == ("typo", 7)
    assert gauge(plane, "CP0005") == 1 and gauge(plane, "CP0003") == 1

    assert plane.cache.snapshot is not None
    generation = plane.cache.snapshot.generation
    (tmp_path / "b-extra.yaml").unlink()  # the definition not served: nothing to publish
    (tmp_path / "kinds.yaml").unlink()
    wait_until(lambda: not any(f["code"] in ("CP0003", "CP0004", "CP0005")
                               for f in analysis(plane) or []), what="the findings to go")
    assert plane.cache.snapshot.generation == generation  # gone without a publish
    assert gauge(plane, "CP0005") == 0 and gauge(plane, "CP0004") == 0


def test_definitions_read_together_tie_to_the_path_that_sorts_last(tmp_path: Path) -> None:
    (tmp_path / "z-extra.yaml").write_text(EXTRA % 9080)
    (tmp_path / "a-extra.yaml").write_text(EXTRA % 9081)
    plane = ControlPlane(tmp_path)
    try:
        [dup] = wait_until(lambda: analysis(plane, "?code=CP0005"), what="CP0005")
    finally:
        plane.stop()
    assert dup["file"] == str(tmp_path / "a-extra.yaml")
    assert (f"{tmp_path / 'z-extra.yaml'}:1, the definition served (of the files read "
            "together, the one whose path sorts last)") in dup["message"], dup
