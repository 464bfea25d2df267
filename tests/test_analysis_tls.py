"""CP0130, CP0131: TLS origination that cannot work, or does not verify the server."""

from __future__ import annotations

from pathlib import Path

from tests.analysis_helpers import destination_rule, line_of, only, run

BASE = """\
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  selector: {app: api}
  ports: [{name: https, port: 443}, {name: http, port: 80}]
"""

DR = destination_rule("""\
    trafficPolicy:
      portLevelSettings:
      - port: {number: %d}
        tls: {mode: SIMPLE, caCertificates: /etc/ca.pem}
    """, host="api")


def test_origination_to_a_port_speaking_tls(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, DR % 443, BASE), "CP0130")
    assert (str(f.object), f.path) == ("DestinationRule default/api",
                                       "spec.trafficPolicy.portLevelSettings[0].tls.mode")
    assert "port 443" in f.message
    assert f.line == line_of(tmp_path, "tls: {mode: SIMPLE")


def test_origination_to_an_http_port(tmp_path: Path) -> None:
    assert not only(run(tmp_path, DR % 80, BASE), "CP0130")


def test_rule_level_tls_overridden_on_the_tls_port(tmp_path: Path) -> None:
    case = destination_rule("""\
        trafficPolicy:
          tls: {mode: SIMPLE, caCertificates: /etc/ca.pem}
          portLevelSettings:
          - port: {number: 443}
            tls: {mode: DISABLE}
        """, host="api")
    assert not only(run(tmp_path, case, BASE), "CP0130")
    broken = case.replace("{number: 443}", "{number: 80}")
    [f] = only(run(tmp_path, broken, BASE), "CP0130")
    assert f.path == "spec.trafficPolicy.tls.mode"


def test_no_ca(tmp_path: Path) -> None:
    case = (DR % 80).replace(", caCertificates: /etc/ca.pem", "")
    [f] = only(run(tmp_path, case, BASE), "CP0131")
    assert f.path == "spec.trafficPolicy.portLevelSettings[0].tls.mode"
    assert f.code.istio == "IST0128/IST0129"


def test_ca_credential_or_skip_verify(tmp_path: Path) -> None:
    for tls in ("caCertificates: /etc/ca.pem", "credentialName: api-tls",
                "insecureSkipVerify: true"):
        case = (DR % 80).replace("caCertificates: /etc/ca.pem", tls)
        assert not only(run(tmp_path, case, BASE), "CP0131"), tls
