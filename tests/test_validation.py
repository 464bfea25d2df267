"""Invalid VirtualServices and DestinationRules: each is rejected with an error naming the
object and the field, none crashes anything, and none reaches a real Envoy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog

from controlplane.model.errors import ValidationError
from controlplane.model.parse import parse_object
from tests.harness import ControlPlane, get, wait_until, write_yaml
from tests.manifests import ISTIO, pod, service

OK_ROUTE = [{"destination": {"host": "web"}}]


def vs(name: str, http: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": ISTIO, "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"hosts": ["web"], **({"http": http} if http is not None else {}), **spec}}


def dr(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": ISTIO, "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"host": "web", **spec}}


def route(**fields: Any) -> list[dict[str, Any]]:
    return [{"route": OK_ROUTE, **fields}]


INVALID: list[tuple[dict[str, Any], str]] = [
    (vs("v01", OK_ROUTE and [{"route": OK_ROUTE}], hosts=[]), "spec.hosts: needs at least one"),
    (vs("v02", [{"route": OK_ROUTE}], hosts=["*"]), "spec.hosts[0]"),
    (vs("v03", [{"route": OK_ROUTE}], hosts=[7]), "spec.hosts[0]: must be a string"),
    (vs("v04", [{"route": [{"destination": {"host": "web", "subset": "a"}, "weight": 60},
                           {"destination": {"host": "web", "subset": "b"}, "weight": 30}]}]),
     "spec.http[0].route: weights must add up to 100, got 90"),
    (vs("v05", [{"route": [{"destination": {"host": "web"}, "weight": 101}]}]),
     "spec.http[0].route[0].weight: must be between 0 and 100"),
    (vs("v06", [{"route": [{"destination": {}}]}]),
     "spec.http[0].route[0].destination.host: is required"),
    (vs("v07", [{"route": [{"destination": {"host": "web", "subset": "Bad_Subset"}}]}]),
     "spec.http[0].route[0].destination.subset"),
    (vs("v08", [{"route": [{"destination": {"host": "web", "port": {"number": 70000}}}]}]),
     "spec.http[0].route[0].destination.port.number: must be between 1 and 65535"),
    (vs("v09", [{"match": [{"uri": {"prefix": "/"}}]}]),
     "spec.http[0]: needs exactly one of route, redirect or directResponse"),
    (vs("v10", [{"route": OK_ROUTE, "redirect": {"uri": "/x"}}]),
     "spec.http[0]: needs exactly one of route, redirect or directResponse, got route, "
     "redirect"),
    (vs("v11", [{"redirect": {"uri": "/x"}, "rewrite": {"uri": "/y"}}]),
     "spec.http[0].rewrite: cannot be used with redirect"),
    (vs("v12", route(match=[{"uri": {"regex": "(?<=a)b"}}])),
     "spec.http[0].match[0].uri.regex: "),
    (vs("v13", route(match=[{"uri": {"regex": "a(b"}}])),
     "spec.http[0].match[0].uri.regex: "),
    (vs("v14", route(match=[{"headers": {"x-user": {"regex": "(a)\\1"}}}])),
     "spec.http[0].match[0].headers.x-user.regex"),
    (vs("v15", route(match=[{"uri": {"prefix": "/", "exact": "/"}}])),
     "spec.http[0].match[0].uri: needs exactly one of exact, prefix or regex"),
    (vs("v16", route(match=[{"uri": {"suffix": ".png"}}])),
     "spec.http[0].match[0].uri.suffix: unknown match type"),
    (vs("v17", route(match=[{"headers": {"bad header": {"exact": "a"}}}])),
     "spec.http[0].match[0].headers.bad header: 'bad header' is not a valid HTTP header"),
    (vs("v18", route(match=[{"port": 0}])),
     "spec.http[0].match[0].port: must be between 1 and 65535"),
    (vs("v19", route(match=[{"urii": {"prefix": "/"}}])),
     "spec.http[0].match[0].urii: unknown field"),
    (vs("v20", route(timeout="10 seconds")), "spec.http[0].timeout: must be a duration"),
    (vs("v21", route(retries={"attempts": -1})),
     "spec.http[0].retries.attempts: must be between 0 and 1000"),
    (vs("v22", route(retries={"attempts": 2, "retryOn": "5xx,sometimes"})),
     "spec.http[0].retries.retryOn: 'sometimes' is neither an Envoy retry policy"),
    (vs("v23", route(retries={"attempts": 2, "perTryTimeout": "0s"})),
     "spec.http[0].retries.perTryTimeout: must be at least 1ms"),
    (vs("v24", route(fault={})), "spec.http[0].fault: needs a delay or an abort"),
    (vs("v25", route(fault={"abort": {"httpStatus": 99}})),
     "spec.http[0].fault.abort.httpStatus: must be between 200 and 599"),
    (vs("v26", route(fault={"abort": {"httpStatus": 503, "percentage": {"value": 150}}})),
     "spec.http[0].fault.abort.percentage.value: must be between 0 and 100"),
    (vs("v27", route(fault={"abort": {"grpcStatus": "NOPE"}})),
     "spec.http[0].fault.abort.grpcStatus: 'NOPE' is not a gRPC status name"),
    (vs("v28", route(fault={"delay": {"percentage": {"value": 10}}})),
     "spec.http[0].fault.delay.fixedDelay: is required"),
    (vs("v29", route(mirror={"host": "web"}, mirrors=[{"destination": {"host": "web"}}])),
     "spec.http[0].mirrors: use either mirror or mirrors"),
    (vs("v30", route(mirror={"host": "web"}, mirrorPercentage={"value": -1})),
     "spec.http[0].mirrorPercentage.value: must be between 0 and 100"),
    (vs("v31", route(rewrite={})), "spec.http[0].rewrite: needs uri, authority"),
    (vs("v32", route(rewrite={"uriRegexRewrite": {"match": "(?=x)", "rewrite": "/"}})),
     "spec.http[0].rewrite.uriRegexRewrite.match"),
    (vs("v33", [{"redirect": {"uri": "/new", "redirectCode": 304}}]),
     "spec.http[0].redirect.redirectCode: must be one of"),
    (vs("v34", [{"redirect": {"scheme": "ftp"}}]),
     "spec.http[0].redirect.scheme: must be http or https"),
    (vs("v35", [{"directResponse": {"status": 700}}]),
     "spec.http[0].directResponse.status: must be between 200 and 599"),
    (vs("v36", [{"directResponse": {"status": 200, "body": {"bytes": "not base64!"}}}]),
     "spec.http[0].directResponse.body.bytes: must be base64"),
    (vs("v37", route(headers={"request": {"set": {"x y": "1"}}})),
     "spec.http[0].headers.request.set.x y"),
    (vs("v38", route(headers={"request": {"replace": {"a": "b"}}})),
     "spec.http[0].headers.request.replace: unknown field"),
    (vs("v39", route(corsPolicy={"allowOrigins": [{"glob": "*"}]})),
     "spec.http[0].corsPolicy.allowOrigins[0].glob: unknown match type"),
    (vs("v40", route(corsPolicy={"maxAge": "a day"})),
     "spec.http[0].corsPolicy.maxAge: must be a duration"),
    (vs("v41", None, tcp=[{"route": [{"destination": {"host": "db"}, "weight": 50},
                                      {"destination": {"host": "db2"}, "weight": 30}]}]),
     "spec.tcp[0].route: weights must add up to 100, got 80"),
    (vs("v42", None, tcp=[{"match": [{"port": "x"}], "route": OK_ROUTE}]),
     "spec.tcp[0].match[0].port: must be an integer"),
    (dr("d01", host=""), "spec.host: must not be empty"),
    (dr("d02", subsets=[{"name": "v1"}, {"name": "v1"}]),
     "spec.subsets[1].name: subset 'v1' is defined twice"),
    (dr("d03", subsets=[{"name": "V1"}]), "spec.subsets[0].name: 'V1' is not a valid subset"),
    (dr("d04", subsets=[{"name": "v1", "labels": ["version"]}]),
     "spec.subsets[0].labels: must be an object"),
    (dr("d05", trafficPolicy={"loadBalancer": {"simple": "FASTEST"}}),
     "spec.trafficPolicy.loadBalancer.simple: 'FASTEST' is not one of"),
    (dr("d06", trafficPolicy={"loadBalancer": {"consistentHash": {}}}),
     "spec.trafficPolicy.loadBalancer.consistentHash: needs exactly one of httpHeaderName"),
    (dr("d07", trafficPolicy={"loadBalancer": {"consistentHash": {"httpCookie": {"ttl": "1s"}}}}),
     "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name: is required"),
    (dr("d08", trafficPolicy={"loadBalancer": {"simple": "RANDOM",
                                                "consistentHash": {"useSourceIp": True}}}),
     "spec.trafficPolicy.loadBalancer: use either simple or consistentHash"),
    (dr("d09", trafficPolicy={"connectionPool": {"tcp": {"maxConnections": 0}}}),
     "spec.trafficPolicy.connectionPool.tcp.maxConnections: must be between 1"),
    (dr("d10", trafficPolicy={"connectionPool": {"tcp": {"connectTimeout": "-1s"}}}),
     "spec.trafficPolicy.connectionPool.tcp.connectTimeout: must be a duration"),
    (dr("d11", trafficPolicy={"connectionPool": {"http": {"http1MaxPendingRequests": "ten"}}}),
     "spec.trafficPolicy.connectionPool.http.http1MaxPendingRequests: must be an integer"),
    (dr("d12", trafficPolicy={"outlierDetection": {"maxEjectionPercent": 120}}),
     "spec.trafficPolicy.outlierDetection.maxEjectionPercent: must be between 0 and 100"),
    (dr("d13", trafficPolicy={"outlierDetection": {"interval": "0s"}}),
     "spec.trafficPolicy.outlierDetection.interval: must be at least 1ms"),
    (dr("d14", trafficPolicy={"portLevelSettings": [{"loadBalancer": {"simple": "RANDOM"}}]}),
     "spec.trafficPolicy.portLevelSettings[0].port.number: is required"),
    (dr("d15", trafficPolicy={"portLevelSettings": [
        {"port": {"number": 80}}, {"port": {"number": 80}}]}),
     "spec.trafficPolicy.portLevelSettings[1].port.number: port 80 has settings twice"),
    (dr("d16", trafficPolicy={"loadBalancr": {}}), "spec.trafficPolicy.loadBalancr: unknown"),
    # Found by the fuzzer (tools/fuzz/findings.md); Istio's validation rejects each.
    (vs("v43", route(timeout="0.5ns")), "spec.http[0].timeout: must be at least 1ms"),
    (vs("v44", route(timeout="1.5ms")),
     "spec.http[0].timeout: must be a whole number of milliseconds"),
    (vs("v45", route(timeout="9" * 400 + "s")),
     "spec.http[0].timeout: " + repr("9" * 400 + "s") + " is longer than a protobuf Duration"),
    (vs("v46", route(timeout="3000000h")),
     "spec.http[0].timeout: must be a whole number of milliseconds (at most ~292 years)"),
    (vs("v47", route(fault={"delay": {"fixedDelay": "999us"}})),
     "spec.http[0].fault.delay.fixedDelay: must be at least 1ms"),
    (vs("v48", route(mirror={"host": "web"}, mirrorPercent=2147483648)),
     "spec.http[0].mirrorPercent: must be between 0 and 100, got 2147483648"),
    (vs("v49", route(fault={"abort": {"httpStatus": 503, "percentage": {"value": 0.00001}}})),
     "spec.http[0].fault.abort.percentage.value: must be 0 or at least 0.0001"),
    (vs("v50", route(fault={"delay": {"fixedDelay": "1s", "percent": 2**31}})),
     "spec.http[0].fault.delay.percent: must be between"),
    (vs("v51", route(headers={"request": {"set": {"x-a": "a%b"}}})),
     "spec.http[0].headers.request.set.x-a: an unterminated %VARIABLE%"),
    (vs("v52", route(headers={"response": {"add": {"x-a": "%"}}})),
     "spec.http[0].headers.response.add.x-a: an unescaped % at the end"),
    (vs("v53", route(headers={"request": {"add": {"x-a": "%REQ("}}})),
     "spec.http[0].headers.request.add.x-a: an unterminated %VARIABLE%"),
    (vs("v54", route(headers={"request": {"set": {"x-a": "a\nb"}}})),
     "spec.http[0].headers.request.set.x-a: must not contain control characters"),
    (vs("v55", [{"route": [{"destination": {"host": "web"},
                            "headers": {"response": {"set": {"x-a": "a\x00b"}}}}]}]),
     "spec.http[0].route[0].headers.response.set.x-a: must not contain control characters"),
    (vs("v56", route(headers={"response": {"set": {"Host": "x"}}})),
     "spec.http[0].headers.response.set.Host: 'Host' cannot be modified"),
    (vs("v57", route(headers={"request": {"remove": ["host"]}})),
     "spec.http[0].headers.request.remove[0]: 'host' cannot be modified"),
    (vs("v58", route(headers={"request": {"set": {"host": "a"}}},
                     rewrite={"authority": "b"})),
     "spec.http[0].headers.request: the authority is set here and in rewrite.authority"),
    (vs("v59", route(retries={"attempts": 0, "perTryTimeout": "1s"})),
     "spec.http[0].retries.attempts: retries are configured but attempts is 0"),
    (vs("v60", route(corsPolicy={"maxAge": "1500ms"})),
     "spec.http[0].corsPolicy.maxAge: must be a whole number of seconds"),
    (dr("d18", trafficPolicy={"loadBalancer": {"consistentHash": {
        "useSourceIp": True, "maglev": {"tableSize": 1000}}}}),
     "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: must be a prime number"),
    (dr("d19", trafficPolicy={"loadBalancer": {"consistentHash": {
        "useSourceIp": True, "maglev": {}}}}),
     "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: is required"),
    (dr("d20", trafficPolicy={"connectionPool": {"tcp": {"tcpKeepalive": {"time": "99999999h"}}}}),
     "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.time: '99999999h' is longer than"),
    (dr("d21", trafficPolicy={"connectionPool": {"tcp": {"connectTimeout": "315576000001s"}}}),
     "spec.trafficPolicy.connectionPool.tcp.connectTimeout: '315576000001s' is longer than"),
    (dr("d22", trafficPolicy={"outlierDetection": {"baseEjectionTime": "0.5ns"}}),
     "spec.trafficPolicy.outlierDetection.baseEjectionTime: must be at least 1ms"),
    (dr("d23", trafficPolicy={"connectionPool": {"tcp": {"tcpKeepalive": {"interval": "0s"}}}}),
     "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive.interval: must be at least 1ms"),
    (dr("d17", subsets=[{"name": "v1", "trafficPolicy": {"outlierDetection": {
        "consecutive5xxErrors": -3}}}]),
     "spec.subsets[0].trafficPolicy.outlierDetection.consecutive5xxErrors: must be between"),
]


@pytest.mark.parametrize(("doc", "message"), INVALID, ids=[d["metadata"]["name"]
                                                            for d, _ in INVALID])
def test_invalid_object_names_the_field(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_object(doc)
    text = str(info.value)
    assert text.startswith(f"{doc['kind']} default/{doc['metadata']['name']}: "), text
    assert message in text, text


def test_there_are_at_least_40_cases() -> None:
    assert len(INVALID) >= 40


@pytest.mark.e2e
def test_invalid_objects_never_reach_envoy(tmp_path: Path, ip: Any, upstream: Any,
                                           envoy: Any) -> None:
    """Every invalid object in one file next to valid ones: each is rejected with a log
    line, the valid ones are served, and Envoy rejects nothing."""
    config = tmp_path / "config"
    config.mkdir()
    pod_ip = ip()
    upstream(pod_ip, 18080, "web", "web-1")
    write_yaml(config / "bad.yaml", *(d for d, _ in INVALID))
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
    assert rejected == {f"{d['kind']} default/{d['metadata']['name']}" for d, _ in INVALID}


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
