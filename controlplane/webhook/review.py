"""The AdmissionReview wire format (admission.k8s.io/v1): the API server's request in, our
answer out. Pure functions over dicts; what to answer is `admission.Admission`'s call.

Kubernetes' webhook contract: the API server sends an AdmissionReview by POST and expects
HTTP 200 with an AdmissionReview of the same apiVersion whose `response.uid` is the
request's. Anything else (another status, a body it cannot decode, a uid that does not
match) is a failed call, which the webhook's failurePolicy decides about, not us. So
every well-formed review gets a 200 and an answer, even about a kind we do not validate;
a body that is not an AdmissionReview is refused with 400 (`BadReview`): it did not come
from an API server, and there is no uid to answer to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# admissionReviewVersions: the configuration asks for v1 only; v1beta1 has the same
# shape and is answered in kind (clusters older than 1.16 sent it).
API_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")


class BadReview(ValueError):
    """The body is not an AdmissionReview request: answered with HTTP 400 and this text."""


@dataclass(frozen=True)
class Request:
    """The parts of `request` the decision reads (the object itself stays a dict)."""

    api_version: str  # of the AdmissionReview, echoed in the answer
    uid: str
    operation: str  # CREATE, UPDATE, DELETE, CONNECT
    group: str  # of request.kind: "networking.istio.io", "" for the core group
    version: str
    kind: str
    namespace: str
    name: str
    object: dict[str, Any] | None  # the object as it would be stored; None on DELETE
    dry_run: bool

    @property
    def ref(self) -> str:
        """`Kind namespace/name`, the way the loader names objects, for logs."""
        name = self.name or (self.object or {}).get("metadata", {}).get("name") or "<unnamed>"
        return f"{self.kind} {self.namespace or '-'}/{name}"


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    message: str = ""  # why it is refused: shown to the user (kubectl prints it)
    warnings: tuple[str, ...] = ()  # shown to the user as `Warning: ...` lines
    why: str = ""  # for the decision's log line: "valid", "invalid", "delete", ...
    fields: tuple[str, ...] = ()  # the field paths a refusal names, for the log line


def parse(body: bytes) -> Request:
    try:
        review = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadReview(f"not JSON: {exc}") from None
    if not isinstance(review, dict):
        raise BadReview("not an AdmissionReview: the body is not a JSON object")
    api_version, kind = review.get("apiVersion"), review.get("kind")
    if kind != "AdmissionReview" or api_version not in API_VERSIONS:
        raise BadReview(f"not an AdmissionReview: apiVersion {api_version!r}, kind {kind!r}; "
                        f"expected kind AdmissionReview, apiVersion one of "
                        f"{', '.join(API_VERSIONS)}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReview("AdmissionReview without a request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReview("request.uid: missing (it must be echoed in the answer)")
    operation = request.get("operation")
    if not isinstance(operation, str) or not operation:
        raise BadReview("request.operation: missing")
    gvk = request.get("kind")
    if not isinstance(gvk, dict) or not isinstance(gvk.get("kind"), str):
        raise BadReview("request.kind: missing")
    obj = request.get("object")
    if obj is not None and not isinstance(obj, dict):
        raise BadReview("request.object: not a JSON object")
    if obj is None and operation in ("CREATE", "UPDATE"):
        raise BadReview(f"request.object: missing for {operation}")

    def text(value: Any) -> str:
        return value if isinstance(value, str) else ""
    return Request(
        api_version=api_version, uid=uid, operation=operation, group=text(gvk.get("group")),
        version=text(gvk.get("version")), kind=gvk["kind"],
        namespace=text(request.get("namespace")), name=text(request.get("name")),
        object=obj, dry_run=request.get("dryRun") is True)


# What a refusal carries to the user. The API server prefixes the message with
# `admission webhook "NAME" denied the request: ` and kubectl prints
# `Error from server (Invalid): error when creating "FILE": ` before that: reason
# "Invalid" and code 422 are what Kubernetes' own validation gives for an invalid field,
# so scripts that tell "invalid" from "forbidden" or "conflict" see the same thing.
REFUSED_CODE = 422
REFUSED_REASON = "Invalid"


def answer(request: Request, verdict: Verdict) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": request.uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        response["status"] = {"status": "Failure", "code": REFUSED_CODE,
                              "reason": REFUSED_REASON, "message": verdict.message}
    if verdict.warnings:
        response["warnings"] = list(verdict.warnings)
    return {"apiVersion": request.api_version, "kind": "AdmissionReview",
            "response": response}
