"""One manifest file read: bytes -> YAML documents -> model objects.

Pure (no store, no event loop, no logging) so that the file source can run it in a worker
thread: parsing megabytes of YAML takes seconds even with libyaml, and on the event loop
it stalled the xDS streams and /healthz. What went wrong is returned for the caller to
report, naming the file and the object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controlplane.model.errors import ValidationError
from controlplane.model.mesh_config import is_mesh_config_map
from controlplane.model.meta import DEFAULT_NAMESPACE, Key
from controlplane.model.parse import Object, is_known_kind, key_of, parse_object

# libyaml's parser is ~10x faster than the pure-Python one and uses far less memory;
# PyYAML built without libyaml has only SafeLoader.
LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

DEFAULT_MAX_FILE_BYTES = 8 * 1024 * 1024  # ~35,000 objects of a typical size; a bigger
# file is most likely not configuration (a log, a dump) and would cost minutes to parse

# Kinds that belong in a Kubernetes/Istio config directory but that this control plane does
# not serve (yet): worth a warning that says so, not one that suggests a typo.
NOT_SERVED_KINDS = frozenset({
    # Istio
    "Gateway", "ServiceEntry", "WorkloadEntry", "WorkloadGroup", "EnvoyFilter",
    "PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy", "Telemetry",
    "ProxyConfig", "WasmPlugin",
    # Gateway API
    "GatewayClass", "HTTPRoute", "GRPCRoute", "TCPRoute", "TLSRoute", "UDPRoute",
    "ReferenceGrant", "BackendTLSPolicy",
    # Kubernetes
    "Namespace", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet",
    "ReplicationController", "Job", "CronJob", "ServiceAccount",
    "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Ingress", "IngressClass",
    "NetworkPolicy", "PersistentVolume", "PersistentVolumeClaim", "StorageClass",
    "HorizontalPodAutoscaler", "PodDisruptionBudget", "LimitRange", "ResourceQuota",
    "PriorityClass", "CustomResourceDefinition", "Node", "Event", "Lease",
    "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "Kustomization",
})


class ManifestError(Exception):
    """The file as a whole could not be taken (unreadable, too large, not YAML)."""


@dataclass(frozen=True)
class Rejected:
    """A document of a served kind that failed validation."""
    key: Key  # the key the document claims (its previous version is kept)
    ref: str
    errors: tuple[str, ...]


@dataclass(frozen=True)
class Ignored:
    """A document of a kind we do not serve."""
    key: Key
    known: bool  # a real Kubernetes/Istio kind (NOT_SERVED_KINDS) rather than a typo


@dataclass
class Manifest:
    objects: dict[Key, Object] = field(default_factory=dict)
    warnings: list[tuple[Key, str]] = field(default_factory=list)  # accepted, with a remark
    rejected: list[Rejected] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)  # documents that are no object at all
    repeated: list[Key] = field(default_factory=list)  # twice in this file: the last one counts


def raw_key(raw: dict[str, Any]) -> Key:
    """The key a raw document claims, as parse_meta would give it."""
    meta = raw.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    name = meta.get("name")
    namespace = meta.get("namespace")
    return Key(str(raw.get("kind")), namespace if isinstance(namespace, str) and namespace
               else DEFAULT_NAMESPACE, name if isinstance(name, str) else "<unnamed>")


def _documents(raw: Any) -> list[Any]:
    """Documents of a YAML stream, with `kind: List` items unpacked (kubectl's output)."""
    if isinstance(raw, dict) and raw.get("kind") == "List" and isinstance(
            raw.get("items"), list):
        return list(raw["items"])
    return [raw]


def read_text(path: Path, max_bytes: int) -> str:
    """The file's text, refused past `max_bytes` without reading it all (the size seen
    by the scan may be older than what is on disk now)."""
    try:
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise ManifestError(f"cannot be read: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise ManifestError(f"larger than the limit of {max_bytes} bytes (max_file_bytes); "
                            f"not read")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def parse_manifest(text: str) -> Manifest:
    """Every document of `text` sorted into objects, rejections and ignored kinds."""
    try:
        docs = [d for raw in yaml.load_all(text, Loader=LOADER) for d in _documents(raw)]
    except yaml.YAMLError as exc:
        raise ManifestError(f"invalid YAML: {' '.join(str(exc).split())}") from exc
    out = Manifest()
    for index, raw in enumerate(docs):
        if raw is None:
            continue  # an empty document (a trailing `---`)
        if not isinstance(raw, dict):
            out.malformed.append(f"document {index}: not a mapping "
                                 f"(a {type(raw).__name__})")
            continue
        kind = raw.get("kind")
        if not isinstance(kind, str) or not kind:
            out.malformed.append(f"document {index}: no kind")
            continue
        if kind == "ConfigMap" and not is_mesh_config_map(raw):
            continue  # an application's ConfigMap: only istio-system/istio is ours
        if not is_known_kind(raw):
            out.ignored.append(Ignored(raw_key(raw), kind in NOT_SERVED_KINDS))
            continue
        try:
            obj = parse_object(raw)
        except ValidationError as exc:
            out.rejected.append(Rejected(raw_key(raw), exc.ref,
                                         tuple(str(e) for e in exc.errors)))
            continue
        key = key_of(obj)
        if key in out.objects:
            out.repeated.append(key)
        out.objects[key] = obj
        out.warnings.extend((key, w) for w in getattr(obj, "warnings", ()))
    return out


def read_manifest(path: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> Manifest:
    """Raises ManifestError (its message does not repeat the path)."""
    return parse_manifest(read_text(path, max_bytes))
