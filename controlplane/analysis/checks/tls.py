"""DestinationRule TLS origination that cannot work, or does not verify (CP0130, CP0131).

What really breaks (CP0130): SIMPLE or MUTUAL toward a port whose name or appProtocol
says it speaks TLS (https, tls). Such a port is passed through here, routed by SNI: the
client already speaks TLS, so origination wraps TLS in TLS and the server's handshake
fails on the inner ClientHello. The other pairs are not decided by the port: SIMPLE to
a port named http is Istio's usual origination pattern (the app speaks plain HTTP to
the sidecar and the service's targetPort speaks TLS), and DISABLE toward an https port
passes the client's own TLS through — both work, so neither is reported.

CP0131 is Istio's IST0128/IST0129, extended to subsets: SIMPLE or MUTUAL with neither
caCertificates nor credentialName (whose Secret may carry the CA). `insecureSkipVerify:
true` says it on purpose and is not reported.
"""

from __future__ import annotations

from collections.abc import Iterator

from controlplane.analysis.checks.common import destination_rules, finding
from controlplane.analysis.findings import Finding
from controlplane.analysis.inputs import Inputs
from controlplane.model.destination_rule import ClientTls, DestinationRule, TrafficPolicy
from controlplane.model.service import Protocol

ORIGINATING = ("SIMPLE", "MUTUAL")


def tls_settings(dr: DestinationRule) -> Iterator[tuple[str, str, int | None, ClientTls]]:
    """(field path, subset "" for the rule, port None for every port, settings) for each
    `tls` a DestinationRule writes."""
    levels: list[tuple[str, str, TrafficPolicy]] = [("spec.trafficPolicy", "",
                                                     dr.traffic_policy)]
    levels += [(f"spec.subsets[{s}].trafficPolicy", subset.name, subset.traffic_policy)
               for s, subset in enumerate(dr.subsets) if subset.traffic_policy is not None]
    for path, subset, policy in levels:
        if policy.tls is not None:
            yield f"{path}.tls", subset, None, policy.tls
        for k, level in enumerate(policy.port_level):
            if level.tls is not None:
                yield f"{path}.portLevelSettings[{k}].tls", subset, level.port, level.tls


def tls_modes(inputs: Inputs) -> Iterator[Finding]:
    mesh = inputs.mesh
    for dr, fqdn in destination_rules(inputs):
        service = mesh.services.get(fqdn)
        for path, subset, number, tls in tls_settings(dr):
            if tls.mode not in ORIGINATING:
                continue
            if not (tls.ca_certificates or tls.credential_name or tls.insecure_skip_verify):
                yield finding(
                    "CP0131", dr, f"{path}.mode",
                    f"TLS mode {tls.mode} without caCertificates or credentialName: the "
                    "server's certificate is checked against the proxy host's system roots "
                    "only, which a private CA's certificate fails (and any public one "
                    "passes)",
                    "set caCertificates (or credentialName with a Secret holding ca.crt); "
                    "insecureSkipVerify: true if no verification is meant")
            if service is None:
                continue
            for port in service.ports:
                if number is not None and port.port != number:
                    continue
                # Only where these settings are the ones in force (a port-level or subset
                # setting may replace them).
                if dr.policy(subset, port.port).tls is not tls or port.l7 is not Protocol.TLS:
                    continue
                yield finding(
                    "CP0130", dr, f"{path}.mode",
                    f"TLS mode {tls.mode} on port {port.port} of {service.fqdn}, which speaks "
                    f"TLS itself (port {port.name or port.app_protocol!r}): clients' TLS is "
                    "passed through and would be wrapped in a second TLS session the "
                    "server cannot read",
                    "use mode DISABLE for ports whose clients speak TLS, or name the port "
                    "http-… if clients speak plain HTTP and the sidecar should originate")


CHECKS = [tls_modes]
