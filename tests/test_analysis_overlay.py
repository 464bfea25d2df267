"""`controlplane analyze --kubeconfig` against a real API server, and the files overlaid
on its objects: what applying the files would do to the live mesh."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane.cli import main
from controlplane.sources.kubernetes import load_api_client
from tests.manifests import destination_rule, service, virtual_service
from tests.test_kubernetes import create, install_crds


@pytest.fixture(scope="module")
def kubeconfig() -> Iterator[str]:
    from tests.kube.cluster import LocalCluster

    with LocalCluster() as cluster:
        install_crds(load_api_client(str(cluster.kubeconfig_path)))
        yield str(cluster.kubeconfig_path)


def analyze(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[Any]]:
    code = main(["analyze", "-o", "json", "--namespaces", "shop", *args])
    return code, json.loads(capsys.readouterr().out)


ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: %s}}]
"""


def test_cluster_then_files_over_it(kubeconfig: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    api = load_api_client(kubeconfig)
    from kubernetes import client

    client.CoreV1Api(api).create_namespace(client.V1Namespace(
        metadata=client.V1ObjectMeta(name="shop")))
    create(api, service("reviews", 9080, ns="shop"))
    create(api, destination_rule("reviews", "reviews", {"v1": {"version": "v1"}}, ns="shop"))
    create(api, virtual_service("reviews", ["reviews"], [
        {"route": [{"destination": {"host": "reviews", "subset": "v3"}}]}], ns="shop"))

    # The cluster alone: the live VirtualService routes to a subset nobody defines.
    code, found = analyze(capsys, "--kubeconfig", kubeconfig)
    [f] = found
    assert code == 1 and (f["code"], f["object"]["name"], f["file"]) == (
        "CP0102", "reviews", "")

    # The fix, as a file: overlaid, the cluster's version is replaced and nothing is left.
    (tmp_path / "fix.yaml").write_text(ROUTE % "v1")
    assert analyze(capsys, "--kubeconfig", kubeconfig, "-f", str(tmp_path)) == (0, [])

    # A change that breaks it again is found in the file, at its line, against the
    # cluster's DestinationRule (which the files do not hold).
    (tmp_path / "fix.yaml").write_text(ROUTE % "v2")
    code, found = analyze(capsys, "--kubeconfig", kubeconfig, "-f", str(tmp_path))
    [f] = found
    assert code == 1 and f["code"] == "CP0102" and "shop/reviews" in f["message"]
    assert (f["file"], f["line"]) == (str(tmp_path / "fix.yaml"), 7)


def test_unreachable_cluster_is_a_usage_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    assert main(["analyze", "--kubeconfig", str(config)]) == 2
    assert "cannot list" in capsys.readouterr().err
