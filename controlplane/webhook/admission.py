"""What the webhook answers: the loader's validation, exactly (`model.parse.parse_object`,
the function every source calls), and the analysis findings as warnings.

Validated (the kinds the loader parses that Kubernetes cannot validate for us):
VirtualService, DestinationRule and Sidecar of networking.istio.io (any served version),
and the mesh config, ConfigMap istio-system/istio. Any other ConfigMap is admitted without
a word (config/kubernetes/validating-webhook.yaml sends only that one); any other kind is
admitted with a warning that it was not checked (the webhook configuration's rules send
more than this webhook validates).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import structlog

from controlplane.model.errors import ValidationError
from controlplane.model.istio_common import ISTIO_GROUP
from controlplane.model.mesh_config import is_mesh_config_map
from controlplane.model.parse import parse_object
from controlplane.store import Store
from controlplane.webhook import advice
from controlplane.webhook.review import Request, Verdict

# The verdict with the analysis's warnings: runs in a worker thread; never raises.
Later = Callable[[], Verdict]

log = structlog.get_logger("controlplane.webhook")

VALIDATED = {(ISTIO_GROUP, "VirtualService"), (ISTIO_GROUP, "DestinationRule"),
             (ISTIO_GROUP, "Sidecar"), ("", "ConfigMap")}


class Admission:
    """`decide(request)`. With a store, valid objects get the analysis's findings about
    them as warnings; without one (or before its initial load), validation only.
    `serves(namespace, kind)`: whether the store holds that namespace's objects (a
    control plane with `--namespaces` or `--revision` does not hold them all); an object
    elsewhere is validated only, not analysed against a mesh it is not part of."""

    def __init__(self, store: Store | None = None,
                 serves: Callable[[str, str], bool] = lambda namespace, kind: True) -> None:
        self.store = store
        self.serves = serves

    def decide(self, request: Request) -> Verdict:
        """The verdict with every warning, the analysis run here (tests; the server runs
        it off the loop: `validate`)."""
        verdict, later = self.validate(request)
        return later() if later is not None else verdict

    def validate(self, request: Request) -> tuple[Verdict, Later | None]:
        """Validation's verdict (with the fields the parser ignored as warnings), and for
        a valid object in a mesh this store holds, `later`: the verdict with the
        analysis's warnings too. Called on the event loop (it reads the store); `later`
        reads only what was taken here, so it may run in a worker thread."""
        if request.operation not in ("CREATE", "UPDATE"):
            # DELETE (and CONNECT): nothing is left to serve wrongly; never hold it up.
            return Verdict(True, why=request.operation.lower()), None
        if (request.group, request.kind) not in VALIDATED:
            return Verdict(True, why="not-validated", warnings=(advice.line(
                "controlplane", "", f"does not validate {request.group or 'core'}/"
                f"{request.kind}; admitted unchecked (the webhook configuration's rules "
                "send more than it validates)"),)), None
        raw = _with_namespace(request)
        if request.kind == "ConfigMap" and not is_mesh_config_map(raw):
            return Verdict(True, why="not-mesh-config"), None
        deleting = (raw.get("metadata") or {}).get("deletionTimestamp")
        if deleting and request.operation == "UPDATE":
            # An object being deleted (a finalizer being removed): refusing would hold
            # the deletion up, and what it says is about to stop mattering.
            return Verdict(True, why="being-deleted"), None
        try:
            obj = parse_object(raw)
        except ValidationError as exc:
            return Verdict(False, message=str(exc), why="invalid",
                           fields=tuple(e.path for e in exc.errors)), None
        store = self.store if self.serves(obj.meta.namespace, request.kind) else None
        verdict = Verdict(True, warnings=tuple(advice.warnings([], obj)), why="valid")
        inputs = advice.inputs(store, obj)
        if inputs is None:
            return verdict, None

        def later() -> Verdict:
            try:
                return dataclasses.replace(verdict, warnings=tuple(
                    advice.warnings(advice.findings(inputs, obj), obj)))
            except Exception:  # a bug of ours: only the analysis's warnings are lost
                log.exception("webhook_analysis_failed", object=request.ref)
                return verdict
        return verdict, later


def _with_namespace(request: Request) -> dict[str, Any]:
    """The object with its namespace: the API server sends the request's namespace
    alongside, and an object whose manifest names none takes it (the loader would default
    it to `default`, and name the wrong object in its messages)."""
    raw = dict(request.object or {})
    meta = raw.get("metadata")
    if isinstance(meta, dict) and not meta.get("namespace") and request.namespace:
        raw["metadata"] = {**meta, "namespace": request.namespace}
    return raw
