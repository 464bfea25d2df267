"""Istio's resource names, so users' knowledge and tools carry over."""

from __future__ import annotations

from controlplane.model.service import Service


def cluster_name(port: int, fqdn: str, subset: str = "") -> str:
    return f"outbound|{port}|{subset}|{fqdn}"


def listener_name(bind_ip: str, port: int) -> str:
    return f"{bind_ip}_{port}"


def route_name(port: int) -> str:
    return str(port)


def virtual_host_name(fqdn: str, port: int) -> str:
    return f"{fqdn}:{port}"


def host_aliases(service: Service) -> list[str]:
    """Every name any client may use for the service (model: Service.aliases)."""
    return service.aliases()


def short_alias(service: Service) -> str:
    """The bare name: it resolves only from the service's own namespace, as with
    Kubernetes DNS, so only proxies there get it."""
    return service.meta.name
