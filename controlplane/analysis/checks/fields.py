"""Objects as written: refused by validation (CP0001), fields accepted and ignored
(CP0002: the parsers' warnings, each "path: message"), documents of kinds not served
(CP0003 unknown, CP0004 Istio's but not served here), one object defined differently by
several files (CP0005)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from controlplane.analysis.checks.common import finding
from controlplane.analysis.findings import Finding
from controlplane.analysis.inputs import Inputs, field_error


def invalid(inputs: Inputs) -> Iterator[Finding]:
    for bad in inputs.invalid:
        for error in bad.errors or ():
            yield finding(
                "CP0001", bad.key, error.path, error.message,
                "correct the field; the object is not served until it validates (its "
                "last good version is, if it had one)")


def ignored(inputs: Inputs) -> Iterator[Finding]:
    for kind in ("VirtualService", "DestinationRule", "Sidecar"):  # those with warnings
        for obj in inputs.by_kind.get(kind, ()):
            for warning in getattr(obj, "warnings", ()):
                error = field_error(warning)
                yield finding("CP0002", obj, error.path, error.message,
                              "remove the field, or use the one the message names")


# Istio's own API groups' kinds (and the Gateway API's): worth a word when not served,
# unlike a Deployment, which belongs in a manifest directory and concerns no proxy.
_ROUTING_KINDS = frozenset({
    "Gateway", "ServiceEntry", "WorkloadEntry", "WorkloadGroup", "EnvoyFilter",
    "PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy", "Telemetry",
    "ProxyConfig", "WasmPlugin", "GatewayClass", "HTTPRoute", "GRPCRoute", "TCPRoute",
    "TLSRoute", "UDPRoute", "ReferenceGrant", "BackendTLSPolicy"})


def kinds(inputs: Inputs) -> Iterator[Finding]:
    for key, known in inputs.unserved:
        if not known:
            yield finding("CP0003", key, "kind", f"kind {key.kind!r} is not one Kubernetes "
                          "or Istio has; the document is ignored",
                          "check the kind's spelling and apiVersion")
        elif key.kind in _ROUTING_KINDS:
            yield finding("CP0004", key, "kind", f"{key.kind} is not served by this control "
                          "plane; the document is ignored and nothing routes by it",
                          "see the README for what is served (a Service instead of a "
                          "ServiceEntry; Gateways are not served)")


def duplicates(inputs: Inputs) -> Iterator[Finding]:
    """One finding on each definition not served, at its own file and line."""
    for dup in inputs.duplicates:
        used = f"{dup.used[0]}:{dup.used[1]}"
        for file, line in dup.others:
            yield replace(finding(
                "CP0005", dup.key, "", f"also defined, differently, in {used}, the definition "
                f"served ({dup.why}); this one is ignored",
                f"keep one definition of {dup.key.kind} {dup.key.namespace}/"
                f"{dup.key.name}: delete or rename the others"), file=file, line=line)


CHECKS = [invalid, ignored, kinds, duplicates]
