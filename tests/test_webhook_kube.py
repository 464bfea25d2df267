"""The admission webhook behind a real API server, driven with kubectl (built by
tools/kube/build.sh at the API server's version).

The control plane runs here with its Kubernetes source and `--webhook-address` on
loopback; config/kubernetes/validating-webhook.yaml is applied as shipped, its caBundle
filled by `controlplane webhook-certs`, with two test-only changes: the API server calls
the webhook by URL (https://127.0.0.1:PORT/validate) instead of through the Service, and
the namespaces of the failure-policy test are left to a configuration of their own.
"""

from __future__ import annotations

import copy
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from controlplane import cli
from controlplane import log as logsetup
from controlplane.model.meta import Key
from controlplane.sources.kubernetes import load_api_client
from tests.harness import ControlPlane, wait_until
from tests.test_kubernetes import install_crds

ROOT = Path(__file__).resolve().parents[1]
WEBHOOK_CONFIG = ROOT / "config" / "kubernetes" / "validating-webhook.yaml"
ROUTING_HOOK = "validation.controlplane.svc"
# Namespaces labelled so are left to the failure-policy test's own configuration.
FAILURE_LABEL = "controlplane-test"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from tests.kube.cluster import LocalCluster

    with LocalCluster(controllers=False) as c:
        yield c


@pytest.fixture(scope="module")
def kubectl_path() -> Path:
    from tests.kube.cluster import kubectl_binary

    return kubectl_binary()


@pytest.fixture(scope="module")
def api(cluster: Any) -> Any:
    api = load_api_client(str(cluster.kubeconfig_path))
    install_crds(api)
    return api


class Kubectl:
    def __init__(self, binary: Path, kubeconfig: str) -> None:
        self.binary, self.kubeconfig = binary, kubeconfig

    def __call__(self, *args: str, stdin: str | None = None
                 ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.binary), "--kubeconfig", self.kubeconfig, *args],
                              input=stdin, capture_output=True, text=True, timeout=60)

    def apply(self, manifest: dict[str, Any] | str, *flags: str
              ) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self("apply", "-f", "-", *flags, stdin=text)


@pytest.fixture(scope="module")
def kubectl(cluster: Any, kubectl_path: Path) -> Kubectl:
    return Kubectl(kubectl_path, str(cluster.kubeconfig_path))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("webhook-certs")
    assert cli.main(["webhook-certs", "--service", "controlplane", "--namespace",
                     "controlplane", "--out", str(out), "--san", "127.0.0.1",
                     "--webhook-config", str(WEBHOOK_CONFIG)]) == 0
    # cli.main configured logging for a process (cached loggers): back to the tests'
    # before the control plane below logs, or later captures would miss its loggers.
    logsetup.configure("warning", cache=False)
    return out


def by_url(config: dict[str, Any], port: int) -> dict[str, Any]:
    """The shipped configuration, calling https://127.0.0.1:PORT/validate."""
    out = copy.deepcopy(config)
    for hook in out["webhooks"]:
        service = hook["clientConfig"].pop("service")
        hook["clientConfig"]["url"] = f"https://127.0.0.1:{port}{service['path']}"
    return out


def invalid_vs(namespace: str, name: str = "reviews") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {
                "host": "reviews", "port": {"number": 99999}}}]}]}}


def valid_vs(namespace: str, name: str = "reviews") -> dict[str, Any]:
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"hosts": ["reviews"],
                     "http": [{"route": [{"destination": {"host": "reviews"}}]}]}}


def refused_by(result: subprocess.CompletedProcess[str], hook: str = ROUTING_HOOK) -> bool:
    return result.returncode != 0 and f'admission webhook "{hook}" denied the request' in (
        result.stderr)


@pytest.fixture(scope="module")
def plane(api: Any, certs: Path, kubectl: Kubectl) -> Iterator[ControlPlane]:
    plane = ControlPlane(kubernetes={"api_client": api, "crd_retry": 0.5,
                                     "watch_timeout": 5},
                         webhook=(certs / "tls.crt", certs / "tls.key"))
    try:
        wait_until(lambda: plane.run(lambda: plane.store.synced), 30, what="initial sync")
        config = by_url(yaml.safe_load((certs / "validating-webhook.yaml").read_text()),
                        plane.webhook_port)
        # The failure-policy test's namespaces have a configuration of their own.
        config["webhooks"][0]["namespaceSelector"] = {"matchExpressions": [
            {"key": FAILURE_LABEL, "operator": "DoesNotExist"}]}
        result = kubectl.apply(config)
        assert result.returncode == 0, result.stderr
        # The API server takes a configuration up a moment after it is stored: ready
        # once a dry run of an invalid object is refused (as istiod checks its own).
        probe = invalid_vs("default", f"probe-{uuid.uuid4().hex[:6]}")
        wait_until(lambda: refused_by(kubectl.apply(probe, "--dry-run=server")), 30,
                   what="the webhook configuration in force")
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def ns(api: Any, plane: ControlPlane) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(
        metadata=client.V1ObjectMeta(name=name)))
    client.CoreV1Api(api).create_namespaced_service(name, {
        "metadata": {"name": "reviews"},
        "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]}})
    wait_until(lambda: plane.run(lambda: plane.store.get(Key("Service", name, "reviews"))),
               10, what="the namespace's Service mirrored")
    return name


def test_an_invalid_virtual_service_is_refused_with_the_field(
        kubectl: Kubectl, ns: str) -> None:
    result = kubectl.apply(invalid_vs(ns))
    assert refused_by(result), result.stderr
    # kubectl: The request is invalid: error when creating "STDIN": admission webhook
    # "validation.controlplane.svc" denied the request: VirtualService NS/reviews:
    # spec.http[0].route[0].destination.port.number: must be between 1 and 65535, ...
    assert result.stderr.startswith('The request is invalid: error when creating "STDIN": ')
    assert (f"VirtualService {ns}/reviews: spec.http[0].route[0].destination.port.number: "
            "must be between 1 and 65535, got 99999") in result.stderr
    assert "NotFound" in kubectl("get", "-n", ns, "virtualservice", "reviews").stderr


def test_a_server_dry_run_and_an_update_are_checked_too(kubectl: Kubectl, ns: str) -> None:
    assert refused_by(kubectl.apply(invalid_vs(ns), "--dry-run=server"))
    assert kubectl.apply(valid_vs(ns)).returncode == 0
    result = kubectl.apply(invalid_vs(ns))
    assert refused_by(result) and "error when applying patch" in result.stderr, result.stderr
    stored = yaml.safe_load(kubectl("get", "-n", ns, "virtualservice", "reviews",
                                    "-o", "yaml").stdout)
    assert stored["spec"] == valid_vs(ns)["spec"]  # the update did not happen


def test_an_invalid_destination_rule_is_refused(kubectl: Kubectl, ns: str) -> None:
    result = kubectl.apply({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": ns},
        "spec": {"host": "reviews", "subsets": [{"name": "v1", "labels": {"version": "v1"}},
                                                {"name": "v1", "labels": {"version": "v2"}}]}})
    assert refused_by(result), result.stderr
    assert f"DestinationRule {ns}/reviews: spec.subsets[1].name" in result.stderr


def test_a_valid_object_with_an_ignored_field_is_admitted_with_a_warning(
        kubectl: Kubectl, ns: str) -> None:
    result = kubectl.apply({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": ns},
        "spec": {"host": "reviews", "trafficPolicy": {"connectionPool": {
            "http": {"maxConcurrentStreams": 5}}}}})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "destinationrule.networking.istio.io/reviews created\n"
    assert result.stderr == ("Warning: CP0002 spec.trafficPolicy.connectionPool.http."
                             "maxConcurrentStreams: not supported; ignored\n")


SHADOWED = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: NS}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /}}]
    route: [{destination: {host: reviews}}]
  - match: [{uri: {prefix: /api}}]  # never taken: every /api request matches prefix /
    timeout: 2s
    route: [{destination: {host: reviews}}]
"""


def test_a_valid_object_with_a_shadowed_route_is_admitted_with_a_warning(
        kubectl: Kubectl, ns: str) -> None:
    result = kubectl.apply(SHADOWED.replace("NS", ns))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "virtualservice.networking.istio.io/reviews created\n"
    assert re.search(r"^Warning: CP0110 spec\.http\[1\]", result.stderr, re.M), result.stderr


def test_the_mesh_config_is_validated_and_other_config_maps_are_not_sent(
        api: Any, kubectl: Kubectl, plane: ControlPlane) -> None:
    core = client.CoreV1Api(api)
    if "istio-system" not in {n.metadata.name for n in core.list_namespace().items}:
        core.create_namespace({"metadata": {"name": "istio-system"}})
    mesh = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "istio", "namespace": "istio-system"},
            "data": {"mesh": "outboundTrafficPolicy: {mode: SOMETIMES}"}}
    result = kubectl.apply(mesh)
    assert refused_by(result, "mesh-config.validation.controlplane.svc"), result.stderr
    assert "ConfigMap istio-system/istio: data.mesh" in result.stderr
    assert "outboundTrafficPolicy.mode" in result.stderr
    good = {**mesh, "data": {"mesh": "outboundTrafficPolicy: {mode: REGISTRY_ONLY}"}}
    assert kubectl.apply(good).returncode == 0
    # Any other ConfigMap is not even sent (matchConditions): nothing to refuse, no
    # warning, no call.
    other = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "app-settings", "namespace": "istio-system"},
             "data": {"mesh": "{{{ not a mesh config"}}
    result = kubectl.apply(other)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


def test_with_the_webhook_down_fail_refuses_and_ignore_admits(
        api: Any, kubectl: Kubectl, certs: Path, plane: ControlPlane) -> None:
    """The documented failure policy: with Ignore (as shipped) a write goes through
    unchecked while the webhook cannot be reached, and the loader still rejects an
    invalid object; with Fail the write is refused."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace({"metadata": {
        "name": name, "labels": {FAILURE_LABEL: "failure-policy"}}})
    down = ControlPlane(webhook=(certs / "tls.crt", certs / "tls.key"))
    port = down.webhook_port
    down.stop()  # nothing listens on its port now: connection refused
    config = by_url(yaml.safe_load((certs / "validating-webhook.yaml").read_text()), port)
    config["metadata"]["name"] = "controlplane-down"
    config["webhooks"] = config["webhooks"][:1]
    config["webhooks"][0]["namespaceSelector"] = {"matchLabels": {FAILURE_LABEL:
                                                                  "failure-policy"}}
    config["webhooks"][0]["failurePolicy"] = "Fail"
    assert kubectl.apply(config).returncode == 0
    try:
        def refused_for_want_of_the_webhook() -> bool:
            result = kubectl.apply(invalid_vs(name))
            return result.returncode != 0 and (
                f'failed calling webhook "{ROUTING_HOOK}"' in result.stderr)
        wait_until(refused_for_want_of_the_webhook, 30, what="Fail in force")
        result = kubectl.apply(invalid_vs(name))
        assert result.stderr.startswith('Error from server (InternalError): error when '
                                        'creating "STDIN": Internal error occurred: failed '
                                        f'calling webhook "{ROUTING_HOOK}"'), result.stderr
        assert "connection refused" in result.stderr

        config["webhooks"][0]["failurePolicy"] = "Ignore"
        assert kubectl.apply(config).returncode == 0
        wait_until(lambda: kubectl.apply(invalid_vs(name)).returncode == 0, 30,
                   what="Ignore in force: the invalid object admitted")
        # The loader is the safety net: the control plane refuses to serve it. (The
        # valid one after it on the same watch shows the invalid one was seen.)
        assert kubectl.apply(valid_vs(name, "after")).returncode == 0
        wait_until(lambda: plane.run(lambda: plane.store.get(
            Key("VirtualService", name, "after"))), 10, what="the next object mirrored")
        assert plane.run(lambda: plane.store.get(Key("VirtualService", name, "reviews"))) is (
            None)
    finally:
        kubectl("delete", "validatingwebhookconfiguration", "controlplane-down")
