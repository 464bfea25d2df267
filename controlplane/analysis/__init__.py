"""What is valid on paper but wrong in practice: findings about the mesh's objects.

`analyze(inputs)` runs every check in `checks.CHECKS` over one consistent set of objects
(the Mesh built from them, plus each object as parsed) and returns findings, each with a
stable code (`findings.CODES`). Reads the model only; never moves any state forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import structlog

from controlplane.analysis.checks import CHECKS, Check
from controlplane.analysis.findings import CODES, Finding
from controlplane.analysis.inputs import Inputs
from controlplane.model.meta import Key

log = structlog.get_logger("controlplane.analysis")

# (object, field path) -> (file, line); ("", 0) when unknown.
Locate = Callable[[Key, str], tuple[str, int]]


def _sort_key(f: Finding) -> tuple[str, int, str, str, str, str, str]:
    return (f.file, f.line, f.code.code, f.object.kind, f.object.namespace, f.object.name,
            f.path)


def _run(check: Check, inputs: Inputs) -> list[Finding]:
    try:
        return list(check(inputs))
    except Exception as exc:  # a bug in one check must not hide the others' findings
        name = f"{check.__module__.rsplit('.', 1)[-1]}.{check.__name__}"
        log.exception("analysis_check_failed", check=name)
        return [Finding(CODES["CP0999"], Key("Check", "", name), "",
                        f"check {name} failed: {type(exc).__name__}: {exc}",
                        "report this as a bug; the check's subject was not analysed")]


def analyze(inputs: Inputs, locate: Locate | None = None,
            checks: list[Check] | None = None) -> list[Finding]:
    """Every finding of every check (or of `checks`), located when `locate` knows where
    the objects came from, sorted by file, line, code and object. Never raises."""
    found: list[Finding] = []
    for check in CHECKS if checks is None else checks:
        found.extend(_run(check, inputs))
    if locate is not None:
        located = []
        for f in found:
            if f.file:  # the check knows better (CP0005: a definition not served)
                located.append(f)
                continue
            try:
                file, line = locate(f.object, f.path)
            except Exception:
                log.exception("analysis_locate_failed", object=str(f.object))
                file, line = "", 0
            located.append(replace(f, file=file, line=line) if file else f)
        found = located
    return sorted(found, key=_sort_key)
