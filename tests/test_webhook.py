"""The validating admission webhook without an API server: AdmissionReview in and out
(junk, DELETE, uid echo, UPDATE, kinds it does not validate), the loader's own messages,
warnings from the analysis and from ignored fields, the what-if mesh they are computed
on, the HTTPS server (a client verifying with ca.crt, certificate rotation, TLS 1.2+) and
the `webhook-certs` command. tests/test_webhook_kube.py runs it behind a real API server
with kubectl."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import ssl
import stat
import threading
import urllib.request
import uuid
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from cryptography import x509

from controlplane import cli
from controlplane import log as logsetup
from controlplane.analysis import checks
from controlplane.analysis.findings import CODES, Finding
from controlplane.analysis.inputs import Inputs
from controlplane.app import App, Settings
from controlplane.model.errors import ValidationError
from controlplane.model.meta import Key
from controlplane.model.parse import parse_object
from controlplane.store import Store
from controlplane.webhook import advice
from controlplane.webhook import server as server_module
from controlplane.webhook.admission import Admission
from controlplane.webhook.certs import make_pair, with_ca_bundle, write_pair
from controlplane.webhook.review import BadReview, answer, parse
from controlplane.webhook.server import CertificateFiles, WebhookServer
from tests.harness import ControlPlane, wait_until
from tests.test_model import load_invalid_objects
from tests.tls_certs import TestCa

ROOT = Path(__file__).resolve().parents[1]
WEBHOOK_CONFIG = ROOT / "config" / "kubernetes" / "validating-webhook.yaml"
ISTIO = "networking.istio.io/v1"


def vs(name: str = "reviews", namespace: str | None = "default", **spec: Any
       ) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": ISTIO, "kind": "VirtualService", "metadata": meta,
            "spec": spec or {"hosts": ["reviews"],
                             "http": [{"route": [{"destination": {"host": "reviews"}}]}]}}


def review(obj: dict[str, Any] | None, operation: str = "CREATE", *, uid: str = "",
           namespace: str = "default", api_version: str = "admission.k8s.io/v1",
           old: dict[str, Any] | None = None, dry_run: bool = False) -> dict[str, Any]:
    """An AdmissionReview as the API server sends it (the parts this webhook reads, and
    some it does not)."""
    source = obj or old or {}
    group, _, version = str(source.get("apiVersion", "v1")).rpartition("/")
    request: dict[str, Any] = {
        "uid": uid or str(uuid.uuid4()), "operation": operation,
        "kind": {"group": group, "version": version, "kind": source.get("kind", "")},
        "resource": {"group": group, "version": version, "resource": "whatever"},
        "namespace": namespace, "name": (source.get("metadata") or {}).get("name", ""),
        "userInfo": {"username": "someone"}, "dryRun": dry_run}
    if obj is not None:
        request["object"] = obj
    if old is not None:
        request["oldObject"] = old
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


def decide(body: dict[str, Any], store: Store | None = None) -> dict[str, Any]:
    """What the webhook answers, as the API server would read it."""
    server = WebhookServer(Admission(store), CertificateFiles("/nonexistent", "/nonexistent"))
    status, out = server.review(json.dumps(body).encode())
    assert status == 200, out
    answered = json.loads(out)
    assert answered["apiVersion"] == body["apiVersion"]
    assert answered["kind"] == "AdmissionReview"
    assert answered["response"]["uid"] == body["request"]["uid"]
    return answered["response"]


def loader_message(raw: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        parse_object(raw)
    return str(info.value)


# -- the AdmissionReview contract -----------------------------------------------------------

@pytest.mark.parametrize("body, says", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (json.dumps({"apiVersion": "v1", "kind": "Pod"}).encode(), "not an AdmissionReview"),
    (json.dumps({"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview",
                 "request": {}}).encode(), "not an AdmissionReview"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
     "without a request"),
    (json.dumps({**review(vs()), "request": {**review(vs())["request"], "uid": ""}}).encode(),
     "request.uid"),
    (json.dumps({**review(vs()), "request": {
        k: v for k, v in review(vs())["request"].items() if k != "object"}}).encode(),
     "request.object: missing for CREATE"),
    (json.dumps({**review(vs()), "request": {**review(vs())["request"], "object": "x"}}
                ).encode(), "request.object: not a JSON object"),
])
def test_junk_is_answered_400_with_what_is_wrong(body: bytes, says: str) -> None:
    with pytest.raises(BadReview, match=says):
        parse(body)
    server = WebhookServer(Admission(), CertificateFiles("/nonexistent", "/nonexistent"))
    status, text = server.review(body)
    assert status == 400 and says.encode() in text


def test_an_invalid_object_is_refused_with_the_loaders_message() -> None:
    bad = vs(spec=None)
    bad["spec"] = {"hosts": ["reviews"], "http": [{"route": [
        {"destination": {"host": "reviews", "port": {"number": 99999}}}]}]}
    response = decide(review(bad, uid="u-1"))
    assert response["allowed"] is False
    assert response["uid"] == "u-1"
    status = response["status"]
    assert status["message"] == loader_message(bad)
    assert status["message"].startswith("VirtualService default/reviews: "
                                         "spec.http[0].route[0].destination.port.number: ")
    assert (status["code"], status["reason"], status["status"]) == (422, "Invalid", "Failure")
    assert "warnings" not in response


def test_a_valid_object_is_allowed_with_no_status_and_no_warnings() -> None:
    response = decide(review(vs(), uid="u-2"))
    assert response == {"uid": "u-2", "allowed": True}


def test_update_is_judged_on_the_new_object_alone() -> None:
    good, bad = vs(), vs()
    bad["spec"] = {"hosts": [""]}
    refused = decide(review(bad, "UPDATE", old=good))
    assert refused["allowed"] is False and "spec.hosts[0]" in refused["status"]["message"]
    # A bad old version does not hold up its fix.
    assert decide(review(good, "UPDATE", old=bad))["allowed"] is True


def test_delete_and_connect_are_always_allowed() -> None:
    bad = vs()
    bad["spec"] = {"hosts": [""]}
    for operation in ("DELETE", "CONNECT"):
        body = review(None, operation, old=bad, uid=f"u-{operation}")
        assert decide(body) == {"uid": f"u-{operation}", "allowed": True}


def test_an_object_being_deleted_may_be_updated_even_if_invalid() -> None:
    """Removing a finalizer from an invalid object that got in while the webhook was
    down must not be refused: that would hold its deletion up."""
    bad = vs()
    bad["spec"] = {"hosts": [""]}
    bad["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert decide(review(bad, "UPDATE", old=bad))["allowed"] is True
    assert decide(review(bad, "CREATE"))["allowed"] is False


def test_dry_run_is_answered_like_any_other_request() -> None:
    bad = vs()
    bad["spec"] = {"hosts": [""]}
    assert decide(review(bad, dry_run=True))["allowed"] is False
    assert decide(review(vs(), dry_run=True))["allowed"] is True


def test_v1beta1_reviews_are_answered_in_kind() -> None:
    response = decide(review(vs(), api_version="admission.k8s.io/v1beta1", uid="old"))
    assert response == {"uid": "old", "allowed": True}


def test_the_namespace_comes_from_the_request_when_the_object_names_none() -> None:
    bad = vs(namespace=None)
    bad["spec"] = {"hosts": [""]}
    message = decide(review(bad, namespace="team-a"))["status"]["message"]
    assert message.startswith("VirtualService team-a/reviews: "), message


def test_kinds_it_does_not_validate_are_allowed_with_a_warning() -> None:
    gateway = {"apiVersion": ISTIO, "kind": "Gateway", "metadata": {"name": "g"},
               "spec": {"servers": "not even a list"}}
    response = decide(review(gateway))
    assert response["allowed"] is True
    [warning] = response["warnings"]
    assert "does not validate networking.istio.io/Gateway" in warning


def test_other_config_maps_pass_without_a_word_and_the_mesh_config_is_validated() -> None:
    other = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "app-settings", "namespace": "istio-system"},
             "data": {"mesh": "{{{ not yaml"}}
    response = decide(review(other, namespace="istio-system", uid="c"))
    assert response == {"uid": "c", "allowed": True}
    mesh = {**other, "metadata": {"name": "istio", "namespace": "istio-system"},
            "data": {"mesh": "outboundTrafficPolicy: {mode: SOMETIMES}"}}
    refused = decide(review(mesh, namespace="istio-system"))
    assert refused["allowed"] is False
    assert refused["status"]["message"] == loader_message(mesh)
    assert "outboundTrafficPolicy.mode" in refused["status"]["message"]


INVALID = [c for c in load_invalid_objects() if isinstance(c.doc, dict) and (
    c.doc.get("kind") in ("VirtualService", "DestinationRule", "Sidecar")
    or (c.doc.get("kind") == "ConfigMap"
        and c.doc.get("metadata", {}).get("name") == "istio"))]


@pytest.mark.parametrize("case", INVALID, ids=[c.name for c in INVALID])
def test_every_invalid_object_of_the_loaders_tests_is_refused_with_its_message(
        case: Any) -> None:
    """tests/invalid_objects.yaml: what the loader rejects, the webhook refuses, with the
    very same text (the field named)."""
    namespace = case.doc.get("metadata", {}).get("namespace") or "default"
    response = decide(review(case.doc, namespace=namespace))
    assert response["allowed"] is False
    assert response["status"]["message"] == loader_message(case.doc)
    assert case.message in response["status"]["message"]


def test_invalid_objects_cover_each_validated_kind() -> None:
    assert {c.doc["kind"] for c in INVALID} == {"VirtualService", "DestinationRule",
                                                "Sidecar", "ConfigMap"}


# -- warnings ------------------------------------------------------------------------------

IGNORED = {"apiVersion": ISTIO, "kind": "DestinationRule",
           "metadata": {"name": "reviews", "namespace": "default"},
           "spec": {"host": "reviews", "trafficPolicy": {"connectionPool": {
               "http": {"maxConcurrentStreams": 5}}}}}


def test_ignored_fields_are_warnings_with_code_and_field() -> None:
    response = decide(review(IGNORED))
    assert response["allowed"] is True
    assert response["warnings"] == [
        "CP0002 spec.trafficPolicy.connectionPool.http.maxConcurrentStreams: not "
        "supported; ignored"]
    assert parse_object(IGNORED).warnings  # the parser's own remark, turned into CP0002


@pytest.fixture
def registered() -> Iterator[list[Any]]:
    """Checks a test adds to the registry, removed afterwards."""
    added: list[Any] = []
    yield added
    for check in added:
        checks.CHECKS.remove(check)


def register(added: list[Any], check: Any) -> None:
    checks.CHECKS.append(check)
    added.append(check)


def synced_store(*raws: dict[str, Any]) -> Store:
    store = Store()
    for raw in raws:
        store.apply(parse_object(raw))
    store.commit(store.build())
    return store


SERVICE = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "reviews", "namespace": "default"},
           "spec": {"selector": {"app": "reviews"}, "ports": [{"name": "http", "port": 9080}]}}


def test_findings_about_the_object_become_warnings_and_others_do_not(
        registered: list[Any]) -> None:
    seen: list[Inputs] = []
    other = Key("DestinationRule", "default", "someone-elses")

    def check(inputs: Inputs) -> Iterable[Finding]:
        seen.append(inputs)
        for key in inputs.objects:
            if key.kind == "VirtualService":
                yield Finding(CODES["CP0110"], key, "spec.http[1]", "never matches: "
                              "spec.http[0] covers every request it matches", "remove it")
        yield Finding(CODES["CP0105"], other, "spec.host", "about another object", "-")
    register(registered, check)
    store = synced_store(SERVICE)
    response = decide(review(vs()), store)
    assert response["warnings"] == ["CP0110 spec.http[1]: never matches: spec.http[0] "
                                    "covers every request it matches"]
    # The check saw the mesh as it would be with the object in force, not as it is.
    [inputs] = seen
    key = Key("VirtualService", "default", "reviews")
    assert inputs.objects[key] == parse_object(vs())
    assert inputs.mesh.virtual_services["reviews.default.svc.cluster.local"].meta.name == (
        "reviews")
    assert store.get(key) is None
    assert store.published is not None and not store.published.virtual_services


def test_a_root_that_hides_its_delegates_route_is_warned_about_it() -> None:
    """The finding is on the delegate (its route can never match), but the root's
    order causes it: applying the root warns too, naming the delegate's route."""
    to_reviews = [{"destination": {"host": "reviews"}}]
    delegate = vs("d", http=[{"route": to_reviews}])
    hiding = [{"match": [{"uri": {"prefix": "/"}}], "route": to_reviews},
              {"match": [{"uri": {"prefix": "/api"}}], "delegate": {"name": "d"}}]
    store = synced_store(SERVICE, delegate)
    [warning] = decide(review(vs("r", hosts=["reviews"], http=hiding)), store)["warnings"]
    assert warning.startswith("CP0110 VirtualService default/d spec.http[0]: this route can "
                              "never match: VirtualService default/r spec.http[0].match[0] "
                              "covers"), warning
    # The same root in an order that reaches the delegate: nothing to say.
    reaching = list(reversed(hiding))
    assert "warnings" not in decide(review(vs("r", hosts=["reviews"], http=reaching)), store)
    # With the hiding root in force, an object that is neither the delegate nor a root
    # merging it is not told about the delegate.
    store = synced_store(SERVICE, delegate, vs("r", hosts=["reviews"], http=hiding))
    other = vs("other", hosts=["reviews.other.svc.cluster.local"], http=[{"route": to_reviews}])
    assert not [w for w in decide(review(other), store).get("warnings", [])
                if "default/d" in w]
    # ... and the delegate itself still is.
    assert any(w.startswith("CP0110 spec.http[0]:")
               for w in decide(review(delegate), store)["warnings"])


def test_a_check_that_raises_costs_its_warnings_only(registered: list[Any]) -> None:
    def broken(inputs: Inputs) -> Iterable[Finding]:
        raise RuntimeError("a bug in a check")
    register(registered, broken)
    with structlog.testing.capture_logs() as logs:
        response = decide(review(IGNORED), synced_store(SERVICE))
    assert response["allowed"] is True
    assert [w.split()[0] for w in response["warnings"]] == ["CP0002"]
    assert any(e["event"] == "webhook_check_failed" and e["check"] == "broken" for e in logs)


def test_a_failing_what_if_costs_the_warnings_only(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Store, key: Key, obj: Any) -> Any:
        raise RuntimeError("a bug in the mesh build")
    store = synced_store(SERVICE)
    monkeypatch.setattr(Store, "what_if", broken)
    with structlog.testing.capture_logs() as logs:
        response = decide(review(IGNORED), store)
    assert response["allowed"] is True
    assert [w.split()[0] for w in response["warnings"]] == ["CP0002"]
    assert any(e["event"] == "webhook_analysis_failed" for e in logs)


def test_no_analysis_before_the_initial_load(registered: list[Any]) -> None:
    """Before every source has listed, a route to a service not loaded yet would be
    reported as unknown: the analysis waits; the parser's remarks do not need it."""
    calls: list[Inputs] = []
    register(registered, lambda inputs: calls.append(inputs) or [])
    store = Store()
    store.register_source("kubernetes")
    response = decide(review(IGNORED), store)
    assert not calls
    assert [w.split()[0] for w in response["warnings"]] == ["CP0002"]
    store.mark_synced("kubernetes")
    decide(review(IGNORED), store)
    assert len(calls) == 1


def test_objects_of_namespaces_the_control_plane_does_not_serve_are_not_analysed(
        registered: list[Any]) -> None:
    """With --namespaces or --revision the store holds part of the cluster: an object
    elsewhere would be analysed against a mesh it is not part of (every route to an
    'unknown' host). It is validated only."""
    calls: list[Inputs] = []
    register(registered, lambda inputs: calls.append(inputs) or [])
    store = synced_store(SERVICE)
    admission = Admission(store, serves=lambda namespace, kind: namespace == "served")
    server = WebhookServer(admission, CertificateFiles("/x", "/x"))
    elsewhere = {**IGNORED, "metadata": {"name": "reviews", "namespace": "elsewhere"}}
    status, out = server.review(json.dumps(review(elsewhere, namespace="elsewhere")).encode())
    assert status == 200 and not calls
    assert [w.split()[0] for w in json.loads(out)["response"]["warnings"]] == ["CP0002"]
    served = {**IGNORED, "metadata": {"name": "reviews", "namespace": "served"}}
    server.review(json.dumps(review(served, namespace="served")).encode())
    assert len(calls) == 1


def test_the_app_asks_its_scoping_sources_what_they_serve() -> None:
    class Scoped:
        async def run(self) -> None: ...

        def served(self, namespace: str, kind: str = "") -> bool:
            return namespace == "mine"

    class Unscoped:  # a FileSource: serves whatever its files hold
        async def run(self) -> None: ...
    app = App(Settings())
    app.sources = [Unscoped()]
    assert app._serves("anything", "VirtualService")
    app.sources.append(Scoped())
    assert app._serves("mine", "VirtualService")
    assert not app._serves("theirs", "VirtualService")


def test_an_ignored_field_a_check_reports_is_not_reported_twice(
        registered: list[Any]) -> None:
    path = "spec.trafficPolicy.connectionPool.http.maxConcurrentStreams"

    def ignored(inputs: Inputs) -> Iterable[Finding]:
        key = Key("DestinationRule", "default", "reviews")
        return [Finding(CODES["CP0002"], key, path, "ignored here", "drop it")]
    register(registered, ignored)
    said = decide(review(IGNORED), synced_store(SERVICE))["warnings"]
    assert [w for w in said if w.startswith(f"CP0002 {path}:")] == [
        f"CP0002 {path}: not supported; ignored"]  # the fields check's, said once


def test_warning_lines_fit_the_api_servers_limits() -> None:
    """One line each (a control character makes the API server drop a warning), at most
    256 characters (what it cuts to), 4,096 in all (past that it drops them)."""
    assert advice.line("CP0110", "spec.http[0]", "a\nb\tc") == "CP0110 spec.http[0]: a b c"
    long = advice.line("CP0110", "spec.http[0]", "x" * 1000)
    assert len(long) == advice.MAX_LINE and long.endswith("…")
    lines = [advice.line("CP0110", f"spec.http[{i}]", "y" * 200) for i in range(100)]
    fitted = advice.fit(lines)
    assert sum(map(len, fitted)) <= 4096
    assert fitted[:-1] == lines[:len(fitted) - 1]
    assert fitted[-1] == (f"... and {100 - len(fitted) + 1} more findings: run "
                          "`controlplane analyze` for all of them")
    assert advice.fit(lines[:3]) == lines[:3]


def test_what_if_leaves_the_store_as_it_was() -> None:
    store = synced_store(SERVICE, vs())
    before_index = store.build()
    changed = vs()
    changed["spec"]["http"][0]["timeout"] = "3s"
    mesh, objects = store.what_if(Key("VirtualService", "default", "reviews"),
                                  parse_object(changed))
    fqdn = "reviews.default.svc.cluster.local"
    assert mesh.virtual_services[fqdn].http[0].timeout is not None
    assert store.published is not None
    assert store.published.virtual_services[fqdn].http[0].timeout is None
    assert store.build().virtual_services[fqdn] == before_index.virtual_services[fqdn]
    assert objects[Key("Service", "default", "reviews")] == parse_object(SERVICE)
    assert not store.unpublished


def test_what_if_includes_changes_not_published_yet() -> None:
    """Built from the published Mesh plus the journal: a Service delivered since the last
    push is in the what-if mesh (incremental builds must be given every change)."""
    store = synced_store(vs())
    store.apply(parse_object(SERVICE))  # not published
    mesh, objects = store.what_if(Key("VirtualService", "default", "reviews"),
                                  parse_object(vs()))
    assert "reviews.default.svc.cluster.local" in mesh.services
    assert Key("Service", "default", "reviews") in objects
    assert store.unpublished  # and still to be published


def test_what_if_of_the_mesh_config_and_of_kinds_it_cannot_overlay() -> None:
    store = synced_store(SERVICE)
    config = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "istio", "namespace": "istio-system"},
              "data": {"mesh": "outboundTrafficPolicy: {mode: REGISTRY_ONLY}"}}
    mesh, _ = store.what_if(Key("ConfigMap", "istio-system", "istio"), parse_object(config))
    assert mesh.config != store.mesh().config
    with pytest.raises(ValueError, match="not a routing kind"):
        store.what_if(Key("Service", "default", "reviews"), parse_object(SERVICE))


# -- the HTTPS server ----------------------------------------------------------------------

def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def post(port: int, ca: Path | None, body: bytes, *, path: str = "/validate",
               method: str = "POST", server_name: str = "127.0.0.1",
               tls: ssl.SSLContext | None = None, extra: str = "") -> tuple[int, bytes]:
    """One request over TLS (verifying the server against `ca`), the raw response."""
    if tls is None:
        tls = ssl.create_default_context(cafile=str(ca))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls,
                                                   server_hostname=server_name)
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}"
    if "Content-Length" not in extra and "Transfer-Encoding" not in extra:
        head += f"Content-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    response = await reader.read()
    writer.close()
    status = int(response.split(b" ", 2)[1])
    return status, response.split(b"\r\n\r\n", 1)[1]


def issue(directory: Path, *names: str) -> Path:
    write_pair(make_pair(list(names) or ["127.0.0.1"]), directory)
    return directory


async def serving(certs: CertificateFiles, store: Store | None = None) -> WebhookServer:
    server = WebhookServer(Admission(store), certs)
    await server.start("127.0.0.1:0")
    return server


def test_a_client_verifying_with_ca_crt_gets_the_answer(tmp_path: Path) -> None:
    issue(tmp_path, "controlplane.controlplane.svc", "127.0.0.1")

    async def main() -> None:
        server = await serving(CertificateFiles(tmp_path / "tls.crt", tmp_path / "tls.key"))
        try:
            body = json.dumps(review(vs(), uid="tls-1")).encode()
            for name in ("127.0.0.1", "controlplane.controlplane.svc"):
                status, out = await post(server.port, tmp_path / "ca.crt", body,
                                         server_name=name)
                assert status == 200
                assert json.loads(out)["response"] == {"uid": "tls-1", "allowed": True}
            with pytest.raises(ssl.SSLCertVerificationError):
                await post(server.port, tmp_path / "ca.crt", body, server_name="other.svc")
        finally:
            server.close()
    run(main())


@pytest.mark.parametrize("request_line, extra, body, status", [
    ("GET /validate", "", b"", 405),
    ("POST /mutate", "", b"{}", 404),
    ("POST /validate", "", b"{junk", 400),
    ("POST /validate", "Transfer-Encoding: chunked\r\n", b"0\r\n\r\n", 411),
    ("POST /validate", "Content-Length: lots\r\n", b"", 411),
    ("POST /validate", f"Content-Length: {64 * 1024 * 1024}\r\n", b"", 413),
])
def test_http_errors(tmp_path: Path, request_line: str, extra: str, body: bytes,
                     status: int) -> None:
    issue(tmp_path)
    method, path = request_line.split()

    async def main() -> None:
        server = await serving(CertificateFiles(tmp_path / "tls.crt", tmp_path / "tls.key"))
        try:
            got, _ = await post(server.port, tmp_path / "ca.crt", body, method=method,
                                path=path, extra=extra)
            assert got == status
        finally:
            server.close()
    run(main())


def test_tls_below_1_2_is_refused(tmp_path: Path) -> None:
    issue(tmp_path)

    async def main() -> None:
        server = await serving(CertificateFiles(tmp_path / "tls.crt", tmp_path / "tls.key"))
        try:
            old = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
            with warnings.catch_warnings():  # TLSv1_1 is deprecated: that is the point
                warnings.simplefilter("ignore", DeprecationWarning)
                old.minimum_version = ssl.TLSVersion.TLSv1_1
                old.maximum_version = ssl.TLSVersion.TLSv1_1
            old.set_ciphers("DEFAULT:@SECLEVEL=0")  # this client could speak TLS 1.1
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await post(server.port, None, b"{}", tls=old)
            ok = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
            ok.maximum_version = ssl.TLSVersion.TLSv1_2
            assert (await post(server.port, None, b"{junk", tls=ok))[0] == 400
        finally:
            server.close()
    run(main())


def replace_atomically(directory: Path, source: Path) -> None:
    """As kubelet updates a mounted Secret: the files are symlinks into a data directory
    that is swapped in one rename."""
    data = directory / f"..data-{uuid.uuid4().hex[:6]}"
    data.mkdir()
    for name in ("tls.crt", "tls.key", "ca.crt"):
        shutil.copy(source / name, data / name)
    link = directory / "..data.tmp"
    link.symlink_to(data.name)
    os.replace(link, directory / "..data")
    for name in ("tls.crt", "tls.key", "ca.crt"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


def test_a_rotated_certificate_is_served_on_the_next_connection(tmp_path: Path) -> None:
    mounted = tmp_path / "mounted"
    mounted.mkdir()
    first, second = issue(tmp_path / "first"), issue(tmp_path / "second")
    replace_atomically(mounted, first)
    certs = CertificateFiles(mounted / "tls.crt", mounted / "tls.key")
    body = json.dumps(review(vs())).encode()

    async def main() -> None:
        server = await serving(certs)
        try:
            assert (await post(server.port, first / "ca.crt", body))[0] == 200
            replace_atomically(mounted, second)
            assert (await post(server.port, second / "ca.crt", body))[0] == 200
            with pytest.raises(ssl.SSLCertVerificationError):
                await post(server.port, first / "ca.crt", body)
            assert certs.loads == 2  # loaded once per pair, not per connection
        finally:
            server.close()
    run(main())


def test_a_pair_that_does_not_load_leaves_the_previous_one_in_use(tmp_path: Path) -> None:
    issue(tmp_path / "good")
    live = tmp_path / "live"
    shutil.copytree(tmp_path / "good", live)
    other = TestCa(tmp_path / "other").issue("127.0.0.1", ips=("127.0.0.1",))
    certs = CertificateFiles(live / "tls.crt", live / "tls.key")
    body = json.dumps(review(vs())).encode()

    async def main() -> None:
        server = await serving(certs)
        try:
            # Half a rotation: a new certificate, the old key. It does not load.
            shutil.copy(other.cert, live / "tls.crt")
            with structlog.testing.capture_logs() as logs:
                assert (await post(server.port, tmp_path / "good" / "ca.crt", body))[0] == 200
            assert [e["serving"] for e in logs
                    if e["event"] == "webhook_certificate_unreadable"] == ["previous pair"]
            # The key arrives: the new pair is served.
            shutil.copy(other.key, live / "tls.key")
            assert (await post(server.port, tmp_path / "other" / "test-ca.pem", body))[0] == 200
        finally:
            server.close()
    run(main())


def test_without_certificate_files_handshakes_fail_until_they_appear(tmp_path: Path) -> None:
    certs = CertificateFiles(tmp_path / "tls.crt", tmp_path / "tls.key")
    body = json.dumps(review(vs())).encode()

    async def main() -> None:
        with structlog.testing.capture_logs() as logs:
            server = await serving(certs)
        assert [e["event"] for e in logs].count("webhook_certificate_missing") == 1
        try:
            with structlog.testing.capture_logs() as logs:
                for _ in range(2):
                    with pytest.raises((ssl.SSLError, ConnectionError)):
                        await post(server.port, None, body,
                                   tls=ssl._create_unverified_context())
            assert not logs  # said once, not once per call
            issue(tmp_path)
            assert (await post(server.port, tmp_path / "ca.crt", body))[0] == 200
        finally:
            server.close()
    run(main())


def test_decisions_are_logged_without_the_object() -> None:
    logsetup.configure("info", cache=False)  # conftest sets it back for the next test
    bad = vs()
    bad["spec"] = {"hosts": ["reviews"], "http": [{"route": [{"destination": {
        "host": "reviews", "port": {"number": 99999}}}]}], "secretish": "hunter2"}
    with structlog.testing.capture_logs() as logs:
        decide(review(bad, uid="log-1"))
    [event] = [e for e in logs if e["event"] == "webhook_decision"]
    assert event["uid"] == "log-1" and event["allowed"] is False
    assert event["object"] == "VirtualService default/reviews"
    assert sorted(event["fields"]) == ["spec.http[0].route[0].destination.port.number",
                                       "spec.secretish"]
    assert "hunter2" not in repr(logs) and "99999" not in repr(logs)


def test_a_bug_in_the_decision_is_a_500_not_an_answer(monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    def broken(self: Admission, request: Any) -> Any:
        raise RuntimeError("bug")
    monkeypatch.setattr(Admission, "validate", broken)
    server = WebhookServer(Admission(), CertificateFiles("/x", "/x"))
    status, _ = server.review(json.dumps(review(vs())).encode())
    assert status == 500


def test_answer_carries_warnings_only_when_there_are_some() -> None:
    request = parse(json.dumps(review(vs(), uid="a")).encode())
    from controlplane.webhook.review import Verdict
    assert answer(request, Verdict(True)) == {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "response": {"uid": "a", "allowed": True}}
    assert answer(request, Verdict(True, warnings=("w",)))["response"]["warnings"] == ["w"]


def test_serve_wires_the_webhook_and_counts_its_answers(tmp_path: Path) -> None:
    """The App as `serve --webhook-address` runs it: the store it analyses is the one
    its sources fill, and every answer is counted on /metrics."""
    certs = issue(tmp_path / "certs")
    config = tmp_path / "config"
    config.mkdir()
    (config / "svc.yaml").write_text(yaml.safe_dump({**SERVICE}))
    plane = ControlPlane(config, webhook=(certs / "tls.crt", certs / "tls.key"))
    try:
        wait_until(lambda: plane.run(lambda: plane.store.get(
            Key("Service", "default", "reviews"))), 10, what="the config loaded")
        bad = vs()
        bad["spec"] = {"hosts": [""]}

        async def calls() -> list[int]:
            return [(await post(plane.webhook_port, certs / "ca.crt", body))[0]
                    for body in (json.dumps(review(bad)).encode(),
                                 json.dumps(review(IGNORED)).encode(), b"junk")]
        assert asyncio.run(calls()) == [200, 200, 400]
        metrics = urllib.request.urlopen(
            f"http://127.0.0.1:{plane.http_port}/metrics", timeout=10).read().decode()
        for outcome in ("refused", "allowed", "bad_review"):
            assert f'controlplane_webhook_reviews_total{{outcome="{outcome}"}} 1.0' in (
                metrics), outcome
    finally:
        plane.stop()


# -- webhook-certs and the flags ------------------------------------------------------------

def test_webhook_certs_writes_a_pair_for_the_service_and_prints_the_ca_bundle(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs"
    assert cli.main(["webhook-certs", "--service", "controlplane", "--namespace", "cp",
                     "--out", str(out), "--san", "127.0.0.1", "--san", "webhook.local",
                     "--webhook-config", str(WEBHOOK_CONFIG)]) == 0
    logsetup.configure("warning", cache=False)  # cli.main's caches loggers; no more
    printed = capsys.readouterr().out.strip()
    assert base64.b64decode(printed) == (out / "ca.crt").read_bytes()
    assert stat.S_IMODE((out / "tls.key").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "controlplane.cp.svc", "controlplane.cp.svc.cluster.local", "webhook.local"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert CertificateFiles(out / "tls.crt", out / "tls.key").context() is not None
    filled = yaml.safe_load((out / "validating-webhook.yaml").read_text())
    source = yaml.safe_load(WEBHOOK_CONFIG.read_text())
    assert filled == with_ca_bundle(source, printed)
    assert all(h["clientConfig"]["caBundle"] == printed for h in filled["webhooks"])


def test_serve_needs_a_certificate_with_a_webhook_address(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--config-dir", ".", "--webhook-address", "127.0.0.1:0"])
    assert "--webhook-address needs --webhook-cert and --webhook-key" in (
        capsys.readouterr().err)


def test_serve_flags_reach_the_settings() -> None:
    args = cli.parser().parse_args([
        "serve", "--webhook-address", "0.0.0.0:15017", "--webhook-cert", "/c",
        "--webhook-key", "/k"])
    assert (args.webhook_address, args.webhook_cert, args.webhook_key) == (
        "0.0.0.0:15017", "/c", "/k")


def test_the_analysis_runs_off_the_loop_and_past_its_bound_only_warnings_are_lost(
        tmp_path: Path, registered: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow analysis neither holds the event loop (another review is answered while it
    runs) nor the answer past ANALYSIS_TIMEOUT: the object is admitted without the
    analysis's warnings, and says so."""
    issue(tmp_path)
    release = threading.Event()
    entered = threading.Event()

    def slow(inputs: Inputs) -> Iterable[Finding]:
        entered.set()
        release.wait(30)  # held until the test has seen the loop answer meanwhile
        return []
    register(registered, slow)
    monkeypatch.setattr(server_module, "ANALYSIS_TIMEOUT", 1.0)
    store = synced_store(SERVICE)

    async def main() -> None:
        server = await serving(CertificateFiles(tmp_path / "tls.crt", tmp_path / "tls.key"),
                               store)
        try:
            ca = tmp_path / "ca.crt"
            slow_review = asyncio.create_task(post(
                server.port, ca, json.dumps(review(vs(), uid="slow")).encode()))
            assert await asyncio.to_thread(entered.wait, 10)
            status, out = await post(server.port, ca, json.dumps(
                review(None, "DELETE", old=vs(), uid="meanwhile")).encode())
            assert (status, json.loads(out)["response"]["uid"]) == (200, "meanwhile")
            assert not slow_review.done()  # answered while the analysis still ran
            status, out = await slow_review
            response = json.loads(out)["response"]
            assert status == 200 and response["allowed"] is True
            assert any("analysis took over 1 s and was left out" in w
                       for w in response["warnings"])
        finally:
            release.set()
            server.close()
    run(main())
