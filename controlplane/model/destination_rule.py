"""Istio's DestinationRule as frozen dataclasses: subsets by pod labels, and the traffic
policy (load balancer, connection pool, outlier detection, client TLS) of the rule, of
each subset and of each port, with the precedence that picks the policy in force.

Precedence, as in Istio: port-level settings override the policy they sit in, and a
subset's policy overrides the rule's (port-level settings included); each of
loadBalancer, connectionPool, outlierDetection and tls is replaced whole, not merged field
by field. `destination_rule_parse.py` builds these from Kubernetes-shaped dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from controlplane.model.meta import Meta


@dataclass(frozen=True)
class ConsistentHash:
    header: str = ""
    cookie: str = ""
    cookie_path: str = ""
    cookie_ttl: float | None = None
    source_ip: bool = False
    query_parameter: str = ""
    maglev: bool = False  # else ring hash
    minimum_ring_size: int | None = None
    table_size: int | None = None


@dataclass(frozen=True)
class Warmup:
    """Envoy's slow start: a new endpoint's weight grows over `duration` seconds."""

    duration: float
    # Both None for the older `warmupDurationSecs` (the window alone, Envoy's defaults);
    # `warmup` fills Istio's defaults in (10 % and 1.0, a linear ramp).
    minimum_percent: float | None = None
    aggression: float | None = None


@dataclass(frozen=True)
class LocalityLbSetting:
    """Istio's localityLbSetting. Localities are "region[/zone[/subzone]]", `*` allowed
    at the end of a distribute locality."""

    enabled: bool | None = None  # None: as the mesh says (Istio's default: on)
    # (from, ((to, weight), ...)): a proxy in `from` spreads its requests by weight
    distribute: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()
    failover: tuple[tuple[str, str], ...] = ()  # (from region, to region)
    failover_priority: tuple[str, ...] = ()  # label names, "label=value" overrides


@dataclass(frozen=True)
class LoadBalancer:
    simple: str = "ROUND_ROBIN"  # ROUND_ROBIN, LEAST_REQUEST, RANDOM, PASSTHROUGH
    consistent_hash: ConsistentHash | None = None
    locality: LocalityLbSetting | None = None
    warmup: Warmup | None = None


@dataclass(frozen=True)
class ConnectionPool:
    max_connections: int | None = None
    connect_timeout: float | None = None
    tcp_keepalive_time: float | None = None
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    idle_timeout: float | None = None
    # HTTP/2 PING keepalive (interval, timeout) in seconds: HTTP/2 clusters only, as Istio.
    http2_keepalive: tuple[float, float] | None = None


@dataclass(frozen=True)
class OutlierDetection:
    # Istio's defaults for the fields left out.
    consecutive_5xx_errors: int = 5
    consecutive_gateway_errors: int = 0
    interval: float = 10.0
    base_ejection_time: float = 30.0
    max_ejection_percent: int = 10
    min_health_percent: int | None = None


@dataclass(frozen=True)
class ClientTls:
    """Istio's ClientTLSSettings, as validated: how the proxy originates TLS upstream.
    File paths are read by each Envoy on its own host; `credential_name` names a
    Kubernetes Secret, sent to proxies in its namespace over SDS."""

    mode: str  # DISABLE, SIMPLE or MUTUAL (ISTIO_MUTUAL is rejected at parse time)
    client_certificate: str = ""
    private_key: str = ""
    ca_certificates: str = ""
    ca_crl: str = ""
    credential_name: str = ""
    subject_alt_names: tuple[str, ...] = ()
    sni: str = ""
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class PortPolicy:
    port: int
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTls | None = None


@dataclass(frozen=True)
class TrafficPolicy:
    load_balancer: LoadBalancer | None = None
    connection_pool: ConnectionPool | None = None
    outlier_detection: OutlierDetection | None = None
    tls: ClientTls | None = None
    port_level: tuple[PortPolicy, ...] = ()

    def overridden_by(self, other: TrafficPolicy | None) -> TrafficPolicy:
        """`other`'s settings where it has them (a subset's over its rule's)."""
        if other is None:
            return self
        return TrafficPolicy(
            load_balancer=other.load_balancer or self.load_balancer,
            connection_pool=other.connection_pool or self.connection_pool,
            outlier_detection=other.outlier_detection or self.outlier_detection,
            tls=other.tls or self.tls,
            port_level=other.port_level or self.port_level)

    def for_port(self, port: int) -> TrafficPolicy:
        """The policy in force on one port: its port-level settings win."""
        if not self.port_level:
            return self
        level = next((p for p in self.port_level if p.port == port), None)
        if level is None:
            return replace(self, port_level=())
        return TrafficPolicy(
            load_balancer=level.load_balancer or self.load_balancer,
            connection_pool=level.connection_pool or self.connection_pool,
            outlier_detection=level.outlier_detection or self.outlier_detection,
            tls=level.tls or self.tls)


# The settings a policy level may hold: attribute, and its name in the API.
_SETTINGS = (("load_balancer", "loadBalancer"), ("connection_pool", "connectionPool"),
             ("outlier_detection", "outlierDetection"), ("tls", "tls"))


@dataclass(frozen=True)
class Subset:
    name: str
    labels: frozenset[tuple[str, str]]
    traffic_policy: TrafficPolicy | None = None


@dataclass(frozen=True)
class DestinationRule:
    meta: Meta
    host: str
    subsets: tuple[Subset, ...]
    traffic_policy: TrafficPolicy = TrafficPolicy()
    warnings: tuple[str, ...] = field(default=(), compare=False)
    export_to: tuple[str, ...] = ()  # validated; not scoped (clusters are shared)

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)

    def policy_sources(self, subset: str, port: int) -> tuple[tuple[str, str], ...]:
        """For each setting `policy(subset, port)` holds, the level of the rule it came
        from, as a field path (`subsets[0].trafficPolicy.portLevelSettings[1]`), in the
        same precedence: the subset's port level, the subset's, the rule's port level,
        the rule's."""
        levels: list[tuple[TrafficPolicy | PortPolicy, str]] = []
        index = next((i for i, s in enumerate(self.subsets) if s.name == subset), None) \
            if subset else None
        for policy, path in (
                (self.subsets[index].traffic_policy if index is not None else None,
                 f"subsets[{index}].trafficPolicy"),
                (self.traffic_policy, "trafficPolicy")):
            if policy is None:
                continue
            k = next((k for k, p in enumerate(policy.port_level) if p.port == port), None)
            if k is not None:
                levels.append((policy.port_level[k], f"{path}.portLevelSettings[{k}]"))
            levels.append((policy, path))
        out = []
        for attr, key in _SETTINGS:
            level = next((path for p, path in levels if getattr(p, attr) is not None), None)
            if level is not None:
                out.append((key, level))
        return tuple(out)

    def policy(self, subset: str, port: int) -> TrafficPolicy:
        """Istio's order: the rule's policy with its port-level settings for the port,
        then the subset's (with the subset's own port-level settings) over it."""
        chosen = self.subset(subset) if subset else None
        mine = chosen.traffic_policy.for_port(port) if chosen and chosen.traffic_policy \
            else None
        return self.traffic_policy.for_port(port).overridden_by(mine)
