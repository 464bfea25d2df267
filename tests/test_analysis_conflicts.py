"""CP0106, CP0107, CP0109: objects competing for one host; tcp routes on TLS ports."""

from __future__ import annotations

from pathlib import Path

from tests.analysis_helpers import line_of, only, run, virtual_service


def vs(name: str, ns: str = "default", created: str = "", export: str = "",
       host: str = "reviews.default.svc.cluster.local") -> str:
    meta = f"{{name: {name}, namespace: {ns}" + (
        f", creationTimestamp: '{created}'" if created else "") + "}"
    return f"""\
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {meta}
spec:
  hosts: [{host}]
{f"  exportTo: [{export}]" if export else ""}
  http:
  - route: [{{destination: {{host: reviews.default.svc.cluster.local}}}}]
"""


def test_two_virtual_services_the_older_wins(tmp_path: Path) -> None:
    found = only(run(tmp_path, vs("old", created="2024-01-01T00:00:00Z")
                     + vs("new", created="2025-01-01T00:00:00Z")), "CP0106")
    [f] = found
    assert str(f.object) == "VirtualService default/new" and f.path == "spec.hosts[0]"
    assert "default/old, which wins" in f.message
    assert "older (created 2024-01-01T00:00:00Z; this one 2025-01-01T00:00:00Z)" in f.message
    names = [line for line in (tmp_path / "case.yaml").read_text().splitlines()]
    assert f.line == next(i for i, line in enumerate(names, 1)
                          if "name: new" in line) + 2  # its hosts line


def test_same_age_namespace_name_decides(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, vs("b") + vs("a")), "CP0106")
    assert str(f.object) == "VirtualService default/b"
    assert "neither has a creationTimestamp, and its namespace/name sorts first" in f.message


def test_private_beats_public_in_its_namespace(tmp_path: Path) -> None:
    found = run(tmp_path, vs("public", created="2024-01-01T00:00:00Z")
                + vs("mine", ns="team", created="2025-01-01T00:00:00Z", export='"."'))
    [f] = only(found, "CP0106")
    assert str(f.object) == "VirtualService default/public"
    assert "team/mine, which wins for namespace team" in f.message
    assert "private to namespace team" in f.message


def test_exported_apart_is_no_conflict(tmp_path: Path) -> None:
    found = run(tmp_path, vs("a", export='"."') + vs("b", ns="team", export='"."'))
    assert not only(found, "CP0106")


def test_one_virtual_service_is_no_conflict(tmp_path: Path) -> None:
    assert not only(run(tmp_path, vs("a")), "CP0106")


DR = """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: %s, namespace: default, creationTimestamp: '%s'}
spec:
  host: reviews
"""


def test_two_destination_rules(tmp_path: Path) -> None:
    found = run(tmp_path, DR % ("old", "2024-01-01T00:00:00Z")
                + DR % ("new", "2025-01-01T00:00:00Z"))
    [f] = only(found, "CP0107")
    assert (str(f.object), f.path) == ("DestinationRule default/new", "spec.host")
    assert "default/old" in f.message


def test_one_destination_rule(tmp_path: Path) -> None:
    assert not only(run(tmp_path, DR % ("old", "2024-01-01T00:00:00Z")), "CP0107")


TLS_BASE = """\
apiVersion: v1
kind: Service
metadata: {name: secure, namespace: default}
spec:
  selector: {app: secure}
  ports: [{name: %s, port: 443}]
"""

TCP_VS = virtual_service("""\
    tcp:
    - match: [{port: 443}]
      route: [{destination: {host: secure}}]
    """, name="secure", hosts="[secure]")


def test_tcp_route_on_tls_port(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, TCP_VS, TLS_BASE % "https"), "CP0109")
    assert (str(f.object), f.path) == ("VirtualService default/secure", "spec.tcp[0]")
    assert f.line == line_of(tmp_path, "- match: [{port: 443}]")


def test_tcp_route_on_tcp_port(tmp_path: Path) -> None:
    assert not only(run(tmp_path, TCP_VS, TLS_BASE % "tcp"), "CP0109")
