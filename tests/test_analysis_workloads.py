"""CP0103, CP0150, CP0151: selectors that select nothing."""

from __future__ import annotations

from pathlib import Path

from tests.analysis_helpers import destination_rule, line_of, only, run

DR = destination_rule("""\
    subsets:
    - name: v1
      labels: {version: v1}
    - name: v3
      labels: {version: %s}
    """)


def test_subset_selecting_no_pods(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, DR % "v3"), "CP0103")
    assert (str(f.object), f.path) == ("DestinationRule default/reviews",
                                       "spec.subsets[1].labels")
    assert "'v3'" in f.message and "version=v3" in f.message
    assert f.line == line_of(tmp_path, "labels: {version: v3}")


def test_subsets_selecting_pods(tmp_path: Path) -> None:
    assert not only(run(tmp_path, DR % "v2"), "CP0103")


SVC = """\
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: %s}
  ports: [{name: http, port: 9080}]
"""


def test_service_selecting_no_pods(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, SVC % "ratings"), "CP0150")
    assert (str(f.object), f.path) == ("Service default/ratings", "spec.selector")
    assert f.line == line_of(tmp_path, "selector:")


def test_service_selecting_pods_or_without_selector(tmp_path: Path) -> None:
    assert not only(run(tmp_path, SVC % "reviews"), "CP0150")
    manual = SVC.replace("  selector: {app: %s}\n", "")
    assert not only(run(tmp_path, manual), "CP0150")


def test_namespace_without_pods_is_not_judged(tmp_path: Path) -> None:
    # A directory of Deployments holds no Pods: every selector would look empty.
    other = (SVC % "ratings").replace("namespace: default", "namespace: shop")
    assert not only(run(tmp_path, other), "CP0150")


SIDECAR = """\
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: s, namespace: default}
spec:
  workloadSelector: {labels: {app: %s}}
  egress: [{hosts: ["./*"]}]
"""


def test_sidecar_selecting_no_pods(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, SIDECAR % "ratings"), "CP0151")
    assert (str(f.object), f.path) == ("Sidecar default/s", "spec.workloadSelector")
    assert f.code.istio == "IST0127"


def test_sidecar_selecting_pods(tmp_path: Path) -> None:
    assert not only(run(tmp_path, SIDECAR % "reviews"), "CP0151")
