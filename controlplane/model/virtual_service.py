"""Istio's VirtualService as frozen dataclasses: ordered HTTP routes (first match wins),
each with its matches, destinations and policies (retries, fault, mirrors, rewrite,
redirect, direct response, header operations, CORS), TCP routes, and TLS routes (by SNI).

Types only; `virtual_service_parse.py` builds them from Kubernetes-shaped dicts and says
what is validated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from controlplane.model.istio_common import StringMatch
from controlplane.model.meta import Key, Meta

# Istio's retryOn when a route's retries leave it out (Envoy policies, comma-separated).
MESH_GATEWAY = "mesh"  # the gateway every sidecar belongs to

ISTIO_DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled," \
                         "retriable-status-codes"


@dataclass(frozen=True)
class HTTPMatch:
    uri: StringMatch | None = None
    headers: tuple[tuple[str, StringMatch | None], ...] = ()  # None: header must be present
    without_headers: tuple[tuple[str, StringMatch | None], ...] = ()
    method: StringMatch | None = None
    authority: StringMatch | None = None
    query_params: tuple[tuple[str, StringMatch | None], ...] = ()
    ignore_uri_case: bool = False
    port: int | None = None
    name: str = ""  # Istio appends it to the route's name: "<route>.<match>"
    # Who may take this match (Istio's sourceMatchHTTP): a proxy carrying these labels,
    # in this namespace ("" any); `gateways`, when given, decide alone ("mesh" for a
    # sidecar).
    source_labels: frozenset[tuple[str, str]] = frozenset()
    source_namespace: str = ""
    gateways: tuple[str, ...] = ()

    @property
    def uri_case_sensitive(self) -> bool:
        """Whether Envoy compares an exact or prefix path case-sensitively
        (ignoreUriCase turns that off; a regex takes it as `uri_regex`'s flag)."""
        return not (self.ignore_uri_case and self.uri is not None
                    and self.uri.kind != "regex")

    @property
    def uri_regex(self) -> str | None:
        """The path regex as Envoy gets it: Envoy's case_sensitive does not reach a
        regex, so ignoreUriCase becomes RE2's inline "(?i)" (as in Istio)."""
        if self.uri is None or self.uri.kind != "regex":
            return None
        return f"(?i){self.uri.value}" if self.ignore_uri_case else self.uri.value

    @property
    def selects_client(self) -> bool:
        """Whether the match depends on the proxy asking."""
        return bool(self.source_labels or self.source_namespace or self.gateways)

    def applies_to(self, labels: frozenset[tuple[str, str]], namespace: str) -> bool:
        """Whether a sidecar with these labels in this namespace takes the match."""
        if self.gateways:
            return MESH_GATEWAY in self.gateways
        return self.source_labels <= labels and self.source_namespace in ("", namespace)


def query_presence(m: StringMatch | None) -> bool:
    """Whether a query parameter's match only asks that it be there: no value, or (as
    Istio reads it) an empty exact value."""
    return m is None or (m.kind == "exact" and not m.value)


@dataclass(frozen=True)
class HeaderOperations:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@dataclass(frozen=True)
class Headers:
    request: HeaderOperations = HeaderOperations()
    response: HeaderOperations = HeaderOperations()


@dataclass(frozen=True)
class Destination:
    host: str
    subset: str = ""
    port: int | None = None


@dataclass(frozen=True)
class WeightedDestination:
    destination: Destination
    weight: int  # relative: Envoy splits by each weight over their sum, as Istio does
    headers: Headers = Headers()
    authority: str | None = None  # a request set/add of :authority (Host) for this one


@dataclass(frozen=True)
class Retries:
    attempts: int
    per_try_timeout: float | None = None
    retry_on: str = ISTIO_DEFAULT_RETRY_ON  # Envoy policies, comma-separated
    retriable_status_codes: tuple[int, ...] = (503,)
    backoff: float | None = None  # seconds: the base interval between retries


@dataclass(frozen=True)
class FaultDelay:
    seconds: float
    percent: float = 100.0


@dataclass(frozen=True)
class FaultAbort:
    http_status: int | None = None
    grpc_status: int | None = None
    percent: float = 100.0


@dataclass(frozen=True)
class Fault:
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


@dataclass(frozen=True)
class Mirror:
    destination: Destination
    percent: float = 100.0


@dataclass(frozen=True)
class Rewrite:
    uri: str | None = None
    authority: str | None = None
    uri_regex: tuple[str, str] | None = None  # (pattern, substitution)


@dataclass(frozen=True)
class Redirect:
    uri: str = ""
    authority: str = ""
    port: int | None = None
    prefix_rewrite: str = ""  # replaces the matched URI prefix (instead of `uri`)
    port_from_request: bool = False  # derivePort FROM_REQUEST_PORT: the listener's port
    scheme: str = ""
    code: int = 301


@dataclass(frozen=True)
class DirectResponse:
    status: int
    body: bytes | None = None


@dataclass(frozen=True)
class CorsPolicy:
    allow_origins: tuple[StringMatch, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: float | None = None
    allow_credentials: bool | None = None


@dataclass(frozen=True)
class Delegate:
    """Where a root route hands its traffic: a VirtualService without hosts."""

    name: str
    namespace: str = ""  # "": the root VirtualService's namespace


@dataclass(frozen=True)
class HTTPRoute:
    name: str
    matches: tuple[HTTPMatch, ...]  # empty: matches everything
    route: tuple[WeightedDestination, ...] = ()
    timeout: float | None = None  # seconds; None: no timeout, as in Istio
    retries: Retries | None = None  # None: Istio's default policy
    fault: Fault | None = None
    mirrors: tuple[Mirror, ...] = ()
    rewrite: Rewrite | None = None
    redirect: Redirect | None = None
    direct_response: DirectResponse | None = None
    headers: Headers = Headers()
    cors: CorsPolicy | None = None
    # A root route's delegate (before merging; the Mesh holds merged routes only).
    delegate: Delegate | None = None
    # The delegate VirtualService a merged route came from (None: the one holding it).
    origin: Key | None = None
    # A merged route's rules: (the root's spec.http index, the delegate's), for
    # `controlplane explain` (the translator names them in the route's metadata).
    origin_rules: tuple[int, int] | None = None


@dataclass(frozen=True)
class TCPRoute:
    ports: tuple[int, ...]  # empty: every port of the host
    route: tuple[WeightedDestination, ...]


@dataclass(frozen=True)
class TLSMatch:
    sni_hosts: tuple[str, ...]  # as written (Envoy's server_names: exact or "*.suffix")
    destination_subnets: tuple[str, ...] = ()  # CIDRs, normalised to network/length
    port: int | None = None  # None: every TLS port of the host
    gateways: tuple[str, ...] = ()  # empty: wherever the VirtualService applies

    @property
    def applies_to_sidecars(self) -> bool:
        return not self.gateways or "mesh" in self.gateways


@dataclass(frozen=True)
class TLSRoute:
    matches: tuple[TLSMatch, ...]  # at least one; any of them selects the route
    route: tuple[WeightedDestination, ...]


@dataclass(frozen=True)
class VirtualService:
    meta: Meta
    hosts: tuple[str, ...]
    gateways: tuple[str, ...]
    http: tuple[HTTPRoute, ...]
    tcp: tuple[TCPRoute, ...] = ()
    tls: tuple[TLSRoute, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)
    export_to: tuple[str, ...] = ()  # as written: "*", "." or namespaces; () = "*"

    @property
    def applies_to_sidecars(self) -> bool:
        return not self.gateways or "mesh" in self.gateways

    @property
    def is_delegate(self) -> bool:
        """A VirtualService without hosts is only ever reached through a root's
        `delegate`, never on its own."""
        return not self.hosts

    def exported_to(self, namespace: str, default: tuple[str, ...] = ("*",)) -> bool:
        """Whether proxies (or a root VirtualService) in `namespace` may see it; without
        exportTo, `default` says (the mesh's defaultVirtualServiceExportTo)."""
        export = self.export_to or default
        return ("*" in export or namespace in export
                or (namespace == self.meta.namespace and "." in export))

    @cached_property
    def selects_clients(self) -> bool:
        """Whether some HTTP match depends on the proxy asking."""
        return any(m.selects_client for route in self.http for m in route.matches)
