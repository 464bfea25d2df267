"""A finding: one thing about one object that will not work as written, with a stable
code, the field it is about, and how to fix it.

Codes are ours (CPnnnn) and never reused for another meaning; where Istio's analyzer has
a message for the same thing, `Code.istio` names it (IST0nnn), so people who know
`istioctl analyze` can map between the two.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controlplane.model.meta import Key


class Severity(enum.Enum):
    ERROR = "error"  # traffic will fail or go somewhere it should not
    WARNING = "warning"  # likely a mistake; traffic flows, not as written
    INFO = "info"  # worth knowing; nothing is wrong


@dataclass(frozen=True)
class Code:
    code: str  # "CP0101": stable, never reused
    name: str  # "RouteToUnknownHost": for people and SARIF rule names
    severity: Severity
    summary: str  # one line: what the code means
    istio: str = ""  # Istio analyzer message it corresponds to ("IST0101"), "" when none


@dataclass(frozen=True)
class Finding:
    code: Code
    object: Key  # the object the finding is about
    path: str  # field path in that object: "spec.http[1].route[0].destination.host"
    message: str  # what is wrong, in this object's terms
    fix: str  # what to do about it
    file: str = ""  # where the object was read from, when known (analyze -f)
    line: int = 0  # 1-based line of `path` (or of the object) in `file`; 0: unknown
    # Other objects whose change caused it or can fix it: for a delegate's route no
    # request reaches, the roots whose order hides it. The admission webhook warns
    # about it when one of them is applied too.
    related: tuple[Key, ...] = ()

    @property
    def severity(self) -> Severity:
        return self.code.severity


def _codes(*codes: Code) -> dict[str, Code]:
    out: dict[str, Code] = {}
    for c in codes:
        assert c.code not in out, c.code
        out[c.code] = c
    return out


E, W = Severity.ERROR, Severity.WARNING

# The registry. Ranges: CP00xx objects as written (validation, ignored fields); CP01xx
# routing references and conflicts; CP011x route reachability; CP012x ports and
# protocols; CP013x TLS; CP014x headless services; CP015x workloads and selectors;
# CP09xx the analysis itself.
# A code added here needs a test with the smallest YAML that triggers it and one that
# does not (tests/test_analysis_*.py).
CODES: dict[str, Code] = _codes(
    Code("CP0001", "InvalidObject", E, "the object fails validation and is not served "
         "(its last good version is, if any)", "IST0106"),
    Code("CP0002", "IgnoredField", W, "a field is accepted but has no effect here"),
    Code("CP0003", "UnknownKind", W, "a document's kind is none this control plane or "
         "Kubernetes/Istio knows (a typo?); it is ignored"),
    Code("CP0004", "KindNotServed", Severity.INFO, "an Istio or Gateway API kind this "
         "control plane does not serve; it is ignored"),
    Code("CP0005", "DuplicateObject", W, "several files define one object differently; "
         "one is served, the others are ignored"),
    Code("CP0101", "RouteToUnknownHost", E, "a route's destination host matches no "
         "service", "IST0101"),
    Code("CP0102", "RouteToUnknownSubset", E, "a route's destination subset is not "
         "defined by the host's DestinationRule", "IST0101"),
    Code("CP0103", "SubsetSelectsNoPods", W, "a DestinationRule subset's labels select "
         "no pod of its service", "IST0173"),
    Code("CP0104", "VirtualServiceUnknownHost", W, "a VirtualService host matches no "
         "service, so its routes apply nowhere"),
    Code("CP0105", "DestinationRuleUnknownHost", W, "a DestinationRule host matches no "
         "service", "IST0174"),
    Code("CP0106", "ConflictingVirtualServices", W, "two VirtualServices name one host "
         "for the same clients; only the older applies", "IST0109"),
    Code("CP0107", "ConflictingDestinationRules", W, "two DestinationRules name one host; "
         "only the older applies"),
    Code("CP0108", "DelegateNotFound", E, "a route delegates to a VirtualService that "
         "does not exist or is not exported to the root's namespace", "IST0101"),
    Code("CP0109", "TcpRouteOnTlsPort", W, "a tcp route matches a TLS port, which only "
         "tls routes (by SNI) route"),
    Code("CP0110", "UnreachableRoute", W, "an HTTP route can never match: earlier "
         "matches cover every request it matches", "IST0130"),
    Code("CP0111", "IneffectiveMatch", W, "one match of an HTTP route can never be "
         "taken: earlier matches cover it (the route is reached by another match)",
         "IST0131"),
    Code("CP0112", "WeightsDoNotAddUp", W, "a route's destination weights do not add up "
         "to 100 (they are relative, so traffic splits by weight over their sum)"),
    Code("CP0120", "PortProtocolUnknown", W, "a service port's name and appProtocol give "
         "no protocol, so it is served as opaque TCP", "IST0118"),
    Code("CP0121", "PortProtocolConflict", W, "services give one port number different "
         "protocols; the sidecar's listener on that port serves one"),
    Code("CP0130", "TlsModeMismatch", E, "a DestinationRule's TLS mode cannot work with "
         "what the destination port speaks"),
    # Istio has one message per level (rule, port); ours names the field instead.
    Code("CP0131", "NoServerVerification", W, "TLS origination without a CA: the "
         "server's certificate is not verified", "IST0128/IST0129"),
    Code("CP0140", "HeadlessPitfall", W, "a setting that a headless service ignores or "
         "serves differently than written"),
    Code("CP0150", "ServiceSelectsNoPods", W, "a Service's selector matches no pod"),
    Code("CP0151", "SidecarSelectsNoPods", W, "a Sidecar's workloadSelector matches no "
         "pod of its namespace, so it applies to nothing", "IST0127"),
    # Not a finding about the configuration: a check failed (a bug here), and its subject
    # went unchecked.
    Code("CP0999", "AnalysisFailed", E, "a check failed on this input; what it looks for "
         "was not checked", "IST0001"),
)
