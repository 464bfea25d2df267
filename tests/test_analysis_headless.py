"""CP0140: headless services served differently than written."""

from __future__ import annotations

from pathlib import Path

from tests.analysis_helpers import line_of, only, run, virtual_service

BASE = """\
apiVersion: v1
kind: Service
metadata: {name: db, namespace: default}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: %s, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: default, labels: {app: db}}
spec: {hostname: db-0, subdomain: %s, containers: [{name: app, image: demo}]}
status: {phase: Running, podIP: 10.0.0.5, conditions: [{type: Ready, status: "True"}]}
"""

VS = virtual_service("""\
    http:
    - timeout: 2s
      route: [{destination: {host: db}}]
    """, name="db", hosts="[db]")


def test_virtual_service_does_not_reach_pod_names(tmp_path: Path) -> None:
    found = only(run(tmp_path, VS, BASE % ("http", "db")), "CP0140")
    [f] = found
    assert (str(f.object), f.path) == ("VirtualService default/db", "spec.hosts[0]")
    assert "db-0.db.default.svc.cluster.local" in f.message
    assert f.line == line_of(tmp_path, "hosts: [db]")


def test_tcp_port_cannot_reach_one_pod(tmp_path: Path) -> None:
    found = only(run(tmp_path, "", BASE % ("tcp-pg", "db")), "CP0140")
    [f] = found
    assert (str(f.object), f.path) == ("Service default/db", "spec.ports[0]")
    assert f.file.endswith("base.yaml")


def test_headless_without_pod_hostnames(tmp_path: Path) -> None:
    # Pods that do not name the service as their subdomain have no per-pod names.
    assert not only(run(tmp_path, VS, BASE % ("tcp-pg", "other")), "CP0140")


def test_not_headless(tmp_path: Path) -> None:
    base = (BASE % ("tcp-pg", "db")).replace("  clusterIP: None\n", "")
    assert not only(run(tmp_path, VS, base), "CP0140")
