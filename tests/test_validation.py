"""Invalid objects (tests/invalid_objects.yaml, whose parsing tests/test_model.py checks)
never reach a real Envoy; values Istio accepts are accepted and translatable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog

from controlplane.model.parse import parse_object
from tests.harness import ControlPlane, get, wait_until, write_yaml
from tests.manifests import ISTIO, pod, service
from tests.test_model import INVALID, rejection_ref

OK_ROUTE = [{"destination": {"host": "web"}}]


def vs(name: str, http: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": ISTIO, "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"hosts": ["web"], "http": http}}


def dr(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": ISTIO, "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"host": "web", **spec}}


def route(**fields: Any) -> list[dict[str, Any]]:
    return [{"route": OK_ROUTE, **fields}]


@pytest.mark.e2e
def test_invalid_objects_never_reach_envoy(tmp_path: Path, ip: Any, upstream: Any,
                                           envoy: Any) -> None:
    """Every invalid object of tests/invalid_objects.yaml in one file next to valid ones:
    each is rejected with a log line naming it, the valid ones are served, and Envoy
    rejects nothing. (A document that is no mapping is no object a log line could name:
    the file source ignores it with a warning, and only the unit test has it.)"""
    bad = [case.doc for case in INVALID if isinstance(case.doc, dict)]
    config = tmp_path / "config"
    config.mkdir()
    pod_ip = ip()
    upstream(pod_ip, 18080, "web", "web-1")
    write_yaml(config / "bad.yaml", *bad)
    write_yaml(config / "good.yaml", service("web", 19380, target=18080),
               pod("web-1", pod_ip, {"app": "web"}),
               vs("good", [{"match": [{"uri": {"prefix": "/"}}],
                            "fault": {"abort": {"httpStatus": 418}},
                            "route": OK_ROUTE}]))
    with structlog.testing.capture_logs() as logs:
        plane = ControlPlane(config)
        try:
            sidecar = ip()
            proxy = envoy("validation", plane.port, instance_ip=sidecar)
            wait_until(lambda: get(sidecar, 19380, "web")[0] == 418, 10,
                       what="the valid VirtualService in force")
            assert proxy.update_rejected() == {}
        finally:
            plane.stop()
    rejected = {e["object"] for e in logs if e["event"] == "object_rejected"}
    assert rejected == {rejection_ref(d) for d in bad}


def _http(doc: dict[str, Any]) -> Any:
    return parse_object(doc).http[0]  # type: ignore[union-attr]


def test_values_istio_accepts_are_accepted_and_translatable() -> None:
    """What Istio accepts must not be refused, nor make the translator raise: values past
    what Envoy's fields hold are clamped in the model (found by tools/fuzz)."""
    from tools.fuzz.publish import publish

    rule = parse_object(dr("ok-keepalive", trafficPolicy={"connectionPool": {"tcp": {
        "tcpKeepalive": {"time": "2000000h", "interval": "75s", "probes": 9}}}}))
    assert rule.traffic_policy.connection_pool.tcp_keepalive_time == 2**32 - 1  # type: ignore
    delay = _http(vs("ok-percent", route(fault={"delay": {"fixedDelay": "1s",
                                                            "percent": 150}}))).fault.delay
    assert delay.percent == 100.0
    route_ = _http(vs("ok-host", route(headers={"request": {"set": {"Host": "api.internal",
                                                                     "x-a": "100%%"}}})))
    assert route_.rewrite.authority == "api.internal"
    assert route_.headers.request.set == (("x-a", "100%%"),)
    for value in ("%HOSTNAME%", "pre %START_TIME% post", "%REQ(:path)%",
                  '%PER_REQUEST_STATE(["a", "b"])%', ""):
        parse_object(vs("ok-value", route(headers={"response": {"add": {"x-v": value}}})))
    parse_object(dr("ok-maglev", trafficPolicy={"loadBalancer": {"consistentHash": {
        "useSourceIp": True, "maglev": {"tableSize": 1009}}}}))
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "web", "namespace": "default"},
               "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}}
    published = publish([parse_object(service), rule,
                         parse_object(vs("ok-host", route(headers={"request": {"set": {
                             "host": "api.internal"}}})))], namespace="default")
    assert not published.withheld
