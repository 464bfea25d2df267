"""Admission warnings: the analysis findings about an object that is about to be admitted,
each as one short line a user reads in kubectl's output (`Warning: CP0110 ...`).

The object is analysed in the mesh as it would be with it in force: the store's objects
with the candidate put in place of its key (`Store.what_if`, built from the published
Mesh, so a routing object costs what a push of it would; taken on the event loop), every
check in `analysis.checks.CHECKS` run over that (in a worker thread: all of them cost
~0.1 s at 1,000 services), and the findings about the candidate kept.
The fields the parser accepts and ignores (the object's own `warnings`) are findings
too: CP0002.

The API server's limits shape the lines: a warning with a control character is dropped;
once all warnings of a response pass 4,096 characters each is cut to 256 and the rest are
dropped (characters: it counts runes, not bytes; k8s.io/apiserver's
endpoints/filters/warning.go). So a line is one line, at most `MAX_LINE` characters,
and the lines together stay under `MAX_TOTAL`, the last one saying how many were left
out.
"""

from __future__ import annotations

import re
import time

import structlog

from controlplane.analysis import checks
from controlplane.analysis.findings import CODES, Finding
from controlplane.analysis.inputs import Inputs
from controlplane.model.meta import Key
from controlplane.model.parse import Object, key_of
from controlplane.store import Store

log = structlog.get_logger("controlplane.webhook")

MAX_LINE = 256  # the API server cuts each warning to 256 characters past its total limit
MAX_TOTAL = 4000  # under the API server's 4,096 for all warnings of one response
IGNORED_FIELD = CODES["CP0002"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def line(code: str, path: str, message: str) -> str:
    text = _CONTROL.sub(" ", f"{code} {path}: {message}" if path else f"{code} {message}")
    return text if len(text) <= MAX_LINE else text[:MAX_LINE - 1] + "…"


def inputs(store: Store | None, obj: Object) -> Inputs | None:
    """What the analysis of `obj` reads, taken now, on the event loop (the store is not
    thread-safe): the mesh as it would be with `obj` in force, and a copy of the objects.
    None when there is no analysis: no store, or before its initial load (a route to a
    service not loaded yet would be reported as unknown), or the what-if build failed."""
    if store is None or not store.synced:
        return None
    key = key_of(obj)
    try:
        mesh, objects = store.what_if(key, obj)
        return Inputs(mesh=mesh, objects=objects)  # a copy: the thread may read it
    except Exception:  # a bug of ours: the object is valid, only its warnings are lost
        log.exception("webhook_analysis_failed", object=str(key))
        return None


def findings(taken: Inputs, obj: Object) -> list[Finding]:
    """The findings of every check about `obj`, or related to it (`Finding.related`).
    Reads only `taken` (immutable once taken), so it may run in a worker thread. A
    check that raises is logged and skipped: a warning left out never refuses an
    object."""
    key = key_of(obj)
    started = time.perf_counter()
    out: list[Finding] = []
    for check in checks.CHECKS:  # read now: the registry is the analysis's to fill
        try:
            out.extend(f for f in check(taken) if f.object == key or key in f.related)
        except Exception:
            log.exception("webhook_check_failed", check=getattr(check, "__name__", repr(check)),
                          object=str(key))
    log.debug("webhook_analysed", object=str(key), findings=len(out),
              took_ms=round((time.perf_counter() - started) * 1000, 2))
    return out


def warnings(found: list[Finding], obj: Object) -> list[str]:
    """The admission warnings for a valid `obj`: `found` (its analysis findings), then
    the fields its parser ignored that no finding named already."""
    key = key_of(obj)
    once: dict[tuple[str, Key, str], Finding] = {}  # two checks may say one thing of a field
    for f in found:
        once.setdefault((f.code.code, f.object, f.path), f)
    # A finding on another object (a delegate whose route this root hides) names it.
    lines = [line(f.code.code, f.path if f.object == key else f"{f.object} {f.path}",
                  f.message) for f in once.values()]
    reported = {f.path for f in found if f.code.code == IGNORED_FIELD.code
                and f.object == key}
    for remark in getattr(obj, "warnings", ()):
        path, _, message = remark.partition(": ")
        if path not in reported:
            lines.append(line(IGNORED_FIELD.code, path, message) if message
                         else line(IGNORED_FIELD.code, "", remark))
    return fit(list(dict.fromkeys(lines)))


def fit(lines: list[str]) -> list[str]:
    """As many lines as fit in MAX_TOTAL, the last saying how many were left out."""
    out: list[str] = []
    total = 0
    for i, text in enumerate(lines):
        rest = len(lines) - i - 1
        room = MAX_TOTAL - total - len(text)
        if room < (80 if rest else 0):  # keep room for the "left out" line
            out.append(f"... and {len(lines) - i} more findings: run `controlplane analyze` "
                       f"for all of them")
            break
        out.append(text)
        total += len(text)
    return out
