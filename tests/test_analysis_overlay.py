"""`controlplane analyze --kubeconfig` against a real API server, and the files overlaid
on its objects: what applying the files would do to the live mesh."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

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

    broken = virtual_service("broken", ["reviews"], [
        {"timeout": "1.5x", "route": [{"destination": {"host": "reviews"}}]}], ns="shop")
    create(api, broken)

    # The cluster alone: the live VirtualService routes to a subset nobody defines, and
    # another one the API server took fails our validation.
    code, found = analyze(capsys, "--kubeconfig", kubeconfig)
    assert code == 1 and [(f["code"], f["object"]["name"], f["path"], f["file"])
                          for f in found] == [
        ("CP0001", "broken", "spec.http[0].timeout", ""),
        ("CP0102", "reviews", "spec.http[0].route[0].destination.subset", "")]
    # The broken one replaced by a file's valid version: it is no longer reported.
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(
        {**broken, "spec": {**broken["spec"], "http": [{"route": [
            {"destination": {"host": "reviews", "subset": "v1"}}]}]}}))

    # The fix, as a file: overlaid, the cluster's version is replaced. What is left is
    # the two VirtualServices for one host (the files' broken is the younger).
    (tmp_path / "fix.yaml").write_text(ROUTE % "v1")
    code, found = analyze(capsys, "--kubeconfig", kubeconfig, "-f", str(tmp_path))
    assert (code, [f["code"] for f in found]) == (0, ["CP0106"])

    # A change that breaks it again is found in the file, at its line, against the
    # cluster's DestinationRule (which the files do not hold).
    (tmp_path / "fix.yaml").write_text(ROUTE % "v2")
    code, found = analyze(capsys, "--kubeconfig", kubeconfig, "-f", str(tmp_path))
    [f] = [f for f in found if f["code"] != "CP0106"]
    assert code == 1 and f["code"] == "CP0102" and "shop/reviews" in f["message"]
    assert (f["file"], f["line"]) == (str(tmp_path / "fix.yaml"), 7)


def test_unreachable_cluster_is_a_usage_error(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    assert main(["analyze", "--kubeconfig", str(config)]) == 2
    assert "cannot list" in capsys.readouterr().err
