"""Kubernetes as a source: Services, EndpointSlices (or Endpoints), Pods, Secrets (their
certificate keys only), Istio's VirtualServices, DestinationRules and Sidecars, and the
mesh config (the `istio` ConfigMap of istio-system), mirrored into the store.

One `Watcher` thread per collection (per namespace with --namespaces). Parsing happens
in the watcher's thread; the store is only touched on the event loop. The source keeps
its own mirror of every valid object it watches, so that a namespace joining or leaving
the served set (--revision) is a local reconciliation, not a relist.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import structlog

from controlplane.model.errors import ValidationError
from controlplane.model.mesh_config import MESH_CONFIG_MAP, ROOT_NAMESPACE
from controlplane.model.meta import DEFAULT_NAMESPACE, Key
from controlplane.model.parse import Object, key_of, parse_object
from controlplane.sources.watch import ApiError, Collection, Transport, Watcher, run_in_thread
from controlplane.store import Store

log = structlog.get_logger("controlplane.sources.kubernetes")

ISTIO_GROUP = "networking.istio.io"
ISTIO_VERSIONS = ("v1", "v1beta1", "v1alpha3")  # preference order
REVISION_LABEL = "istio.io/rev"

SERVICES = Collection("v1", "Service", "services")
PODS = Collection("v1", "Pod", "pods")
ENDPOINTS = Collection("v1", "Endpoints", "endpoints")
ENDPOINT_SLICES = Collection("discovery.k8s.io/v1", "EndpointSlice", "endpointslices")
NAMESPACES = Collection("v1", "Namespace", "namespaces", namespaced=False)
CONFIG_MAPS = Collection("v1", "ConfigMap", "configmaps")
# For DestinationRule credentialName; as istiod, every type but service-account tokens
# (parsing keeps only the certificate keys, model/secret.py).
SECRETS = Collection("v1", "Secret", "secrets",
                     field_selector="type!=kubernetes.io/service-account-token")


def istio_collections(version: str, served: frozenset[str] = frozenset({"sidecars"})
                      ) -> list[Collection]:
    """The Istio kinds to watch. Sidecars only where their CRD is served: a cluster
    with this project's older CRDs has none, and a watcher that can never list would
    hold up the initial sync."""
    api = f"{ISTIO_GROUP}/{version}"
    out = [Collection(api, "VirtualService", "virtualservices"),
           Collection(api, "DestinationRule", "destinationrules")]
    if "sidecars" in served:
        out.append(Collection(api, "Sidecar", "sidecars"))
    return out


def _meta_key(kind: str, raw: dict[str, Any]) -> Key:
    meta = raw.get("metadata") or {}
    return Key(kind, meta.get("namespace") or DEFAULT_NAMESPACE, meta.get("name", ""))


class KubernetesSource:
    NAME = "kubernetes"

    def __init__(self, store: Store, api_client: Any, *,
                 namespaces: frozenset[str] | None = None, revision: str | None = None,
                 endpoints_api: str = "endpointslices", watch_timeout: int = 300,
                 read_timeout: float | None = None, crd_retry: float = 30.0) -> None:
        self.store = store
        self.transport = Transport(api_client)
        self.namespaces = namespaces
        self.revision = revision
        self.endpoints = ENDPOINTS if endpoints_api == "endpoints" else ENDPOINT_SLICES
        self.watch_timeout = watch_timeout
        self.read_timeout = read_timeout
        self.crd_retry = crd_retry
        self.stop = threading.Event()
        self.watchers: list[Watcher] = []
        self.mirror: dict[Key, Object] = {}
        # Objects whose last version failed validation: key -> "path: message" errors
        # (written by the watcher threads; read as a copy, for the analysis)
        self.rejected: dict[Key, tuple[str, ...]] = {}
        # --revision: the namespaces labelled for us; None until listed
        self.revision_namespaces: set[str] | None = None
        self._pending: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        store.register_source(self.NAME)

    # -- which namespaces are served --------------------------------------------------------
    def served(self, namespace: str, kind: str = "") -> bool:
        if kind == "ConfigMap":
            return True  # the mesh config holds whatever namespaces are served
        if self.namespaces is not None and namespace not in self.namespaces:
            return False
        if self.revision is not None:
            return self.revision_namespaces is not None and (
                namespace in self.revision_namespaces)
        return True

    # -- delivery (always on the event loop) -------------------------------------------------
    def _apply(self, obj: Object) -> None:
        key = key_of(obj)
        self.mirror[key] = obj
        if self.served(key.namespace, key.kind):
            self.store.apply(obj)

    def _delete(self, key: Key) -> None:
        self.mirror.pop(key, None)
        self.rejected.pop(key, None)
        self.store.delete(key)

    def _replace(self, kind: str, namespace: str | None, parsed: list[Object | Key]) -> None:
        """A complete LIST result: `parsed` holds objects, or the Key of an object that
        failed validation (its previous version, if any, is kept)."""
        keep = {p if isinstance(p, Key) else key_of(p) for p in parsed}
        for key in [k for k in self.rejected
                    if k.kind == kind and (namespace is None or k.namespace == namespace)
                    and k not in keep]:
            self.rejected.pop(key, None)
        for key in [k for k in self.mirror
                    if k.kind == kind and (namespace is None or k.namespace == namespace)
                    and k not in keep]:
            self._delete(key)
        for p in parsed:
            if not isinstance(p, Key):
                self._apply(p)

    def _parse(self, raw: dict[str, Any]) -> Object | Key:
        try:
            obj = parse_object(raw)
        except ValidationError as exc:
            key = _meta_key(str(raw.get("kind")), raw)
            self.rejected[key] = tuple(str(e) for e in exc.errors)
            log.error("object_rejected", object=exc.ref, errors=[str(e) for e in exc.errors],
                      kept="previous version" if key in self.mirror else "nothing")
            return key
        self.rejected.pop(key_of(obj), None)
        for warning in getattr(obj, "warnings", ()):
            log.warning("object_warning", object=str(key_of(obj)), warning=warning)
        return obj

    def invalid(self) -> dict[Key, tuple[str, ...]]:
        """The objects whose current version fails validation (key -> "path: message"
        errors), for the analysis (CP0001)."""
        return dict(self.rejected)

    def report_version(self) -> frozenset[tuple[Key, tuple[str, ...]]]:
        """Changes whenever `invalid` does (compared once a second; few objects)."""
        return frozenset(self.rejected.items())

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    # -- callbacks from watcher threads ------------------------------------------------------
    def _object_callbacks(self, watcher_id: str, collection: Collection,
                          namespace: str | None) -> tuple[Callable[..., None],
                                                          Callable[..., None]]:
        kind = collection.kind

        def on_list(items: list[dict[str, Any]]) -> None:
            parsed = [self._parse(item) for item in items]
            self._call(self._replace, kind, namespace, parsed)
            self._call(self._synced, watcher_id)

        def on_event(event: str, raw: dict[str, Any]) -> None:
            if event == "DELETED":
                self._call(self._delete, _meta_key(kind, raw))
                return
            parsed = self._parse(raw)
            if not isinstance(parsed, Key):
                self._call(self._apply, parsed)
        return on_list, on_event

    def _namespace_callbacks(self, watcher_id: str) -> tuple[Callable[..., None],
                                                             Callable[..., None]]:
        def on_list(items: list[dict[str, Any]]) -> None:
            names = {i.get("metadata", {}).get("name", "") for i in items}
            self._call(self._set_revision_namespaces, names)
            self._call(self._synced, watcher_id)

        def on_event(event: str, raw: dict[str, Any]) -> None:
            name = raw.get("metadata", {}).get("name", "")
            labels = raw.get("metadata", {}).get("labels") or {}

            def update() -> None:
                current = set(self.revision_namespaces or ())
                if event == "DELETED" or labels.get(REVISION_LABEL) != self.revision:
                    current.discard(name)
                else:
                    current.add(name)
                self._set_revision_namespaces(current)
            self._call(update)
        return on_list, on_event

    def _set_revision_namespaces(self, names: set[str]) -> None:
        before = self.revision_namespaces or set()
        self.revision_namespaces = set(names)
        for ns in sorted(names - before):
            log.info("namespace_served", namespace=ns, revision=self.revision)
        for ns in sorted(before - names):
            log.info("namespace_unserved", namespace=ns, revision=self.revision)
        for key, obj in self.mirror.items():
            if key.kind == "ConfigMap":
                continue  # served whatever the namespace
            if key.namespace in names - before:
                self.store.apply(obj)
            elif key.namespace in before - names:
                self.store.delete(key)

    def _synced(self, watcher_id: str) -> None:
        if watcher_id in self._pending:
            self._pending.discard(watcher_id)
            if not self._pending:
                log.info("initial_sync_done", collections=len(self.watchers))
                self.store.mark_synced(self.NAME)

    # -- running ---------------------------------------------------------------------------
    def _start(self, collection: Collection, namespace: str | None = None,
               label_selector: str = "", field_selector: str = "") -> None:
        watcher_id = f"{collection.api_version}/{collection.kind}/{namespace or '*'}"
        if collection is NAMESPACES:
            on_list, on_event = self._namespace_callbacks(watcher_id)
        else:
            on_list, on_event = self._object_callbacks(watcher_id, collection, namespace)
        watcher = Watcher(self.transport, collection, namespace=namespace,
                          label_selector=label_selector, field_selector=field_selector,
                          on_list=on_list, on_event=on_event,
                          stop=self.stop, watch_timeout=self.watch_timeout,
                          read_timeout=self.read_timeout)
        self._pending.add(watcher_id)
        self.watchers.append(watcher)
        run_in_thread(watcher)

    def _start_all(self, collections: list[Collection]) -> None:
        scopes: list[str | None] = [*sorted(self.namespaces)] if self.namespaces else [None]
        for collection in collections:
            for ns in scopes:
                self._start(collection, ns)

    def istio_version(self) -> str | None:
        """The networking.istio.io version to watch: v1 if served, else the newest older
        one; None while the CRDs are not installed."""
        try:
            group = self.transport.get_json(f"/apis/{ISTIO_GROUP}")
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise
        served = {v.get("version") for v in group.get("versions", [])}
        return next((v for v in ISTIO_VERSIONS if v in served), None)

    def istio_resources(self, version: str) -> frozenset[str]:
        """The resources (plural names) the Istio group serves at `version`."""
        listing = self.transport.get_json(f"/apis/{ISTIO_GROUP}/{version}")
        return frozenset(str(r.get("name")) for r in listing.get("resources", []))

    async def _watch_istio(self) -> None:
        """A missing CRD is a condition, not a crash: the rest of the mesh is served and
        discovery is retried until the CRDs appear."""
        reported = False
        while not self.stop.is_set():
            try:
                version = await asyncio.to_thread(self.istio_version)
                served = (await asyncio.to_thread(self.istio_resources, version)
                          if version is not None else frozenset())
            except Exception as exc:
                log.warning("istio_discovery_failed", error=str(exc)[:300],
                            retry_in_s=self.crd_retry)
                version = None
            else:
                if version is not None:
                    log.info("istio_api", group=ISTIO_GROUP, version=version,
                             sidecars="sidecars" in served)
                    self._start_all(istio_collections(version, served))
                    self._synced("istio")  # its watchers now stand for it
                    return
                # Said once at warning level; the retries after it are routine.
                (log.debug if reported else log.warning)(
                    "istio_crds_missing", group=ISTIO_GROUP, retry_in_s=self.crd_retry,
                    effect="VirtualServices, DestinationRules and Sidecars are not watched "
                           "until the CRDs are installed")
                reported = True
            # Serve what there is meanwhile: the Istio kinds count as listed (empty).
            self._synced("istio")
            await asyncio.sleep(self.crd_retry)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._pending.add("istio")
        if self.revision is not None:
            self._start(NAMESPACES, label_selector=f"{REVISION_LABEL}={self.revision}")
        self._start_all([SERVICES, self.endpoints, PODS, SECRETS])
        # The mesh config: one ConfigMap, asked for by name (a namespace's other
        # ConfigMaps are none of ours, and can be large).
        self._start(CONFIG_MAPS, ROOT_NAMESPACE,
                    field_selector=f"metadata.name={MESH_CONFIG_MAP}")
        istio = asyncio.create_task(self._watch_istio())
        try:
            await asyncio.Event().wait()  # the watchers run in their threads
        finally:
            self.stop.set()
            istio.cancel()


def load_api_client(kubeconfig: str | None, context: str | None = None) -> Any:
    """The official client's ApiClient for a kubeconfig file, or in-cluster config."""
    from kubernetes import client, config
    from urllib3.util import Retry

    configuration = client.Configuration()
    # urllib3 would honour Retry-After inside a request: a starting API server answers
    # 503 with "Retry-After: 5", and the watcher slept there 5 s past the server's
    # readiness. The watchers' own backoff (capped at a second) retries those instead.
    configuration.retries = Retry(total=3, respect_retry_after_header=False)
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, context=context,
                                client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)
