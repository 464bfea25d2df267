"""Findings for people and tools: one line each (text), JSON, or SARIF 2.1.0; and the
exit code a CI pipeline gates on."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from controlplane import __version__
from controlplane.analysis.findings import CODES, Finding, Severity

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def where(f: Finding) -> str:
    return f"{f.file}:{f.line}" if f.file else "-"


def text_line(f: Finding) -> str:
    """`SEVERITY CODE Kind ns/name file:line field: message (fix: ...)`: the fixed part
    first, in columns, so findings line up and `grep`/`sort` work on them."""
    field = f"{f.path}: " if f.path else ""
    return (f"{f.severity.name:<7} {f.code.code} {f.object.kind} {f.object.namespace}/"
            f"{f.object.name} {where(f)} {field}{f.message} (fix: {f.fix})")


def summary(findings: Sequence[Finding]) -> str:
    if not findings:
        return "no findings"
    counts = Counter(f.severity for f in findings)
    parts = [f"{counts[s]} {s.value}{'s' if counts[s] != 1 else ''}"
             for s in Severity if counts[s]]
    objects = len({f.object for f in findings})
    return (f"{len(findings)} finding{'s' if len(findings) != 1 else ''} "
            f"({', '.join(parts)}) in {objects} object{'s' if objects != 1 else ''}")


def text(findings: Sequence[Finding]) -> str:
    return "".join(text_line(f) + "\n" for f in findings) + summary(findings) + "\n"


def as_dict(f: Finding) -> dict[str, Any]:
    return {"severity": f.severity.value, "code": f.code.code, "name": f.code.name,
            "istio": f.code.istio,
            "object": {"kind": f.object.kind, "namespace": f.object.namespace,
                       "name": f.object.name},
            "file": f.file, "line": f.line, "path": f.path, "message": f.message,
            "fix": f.fix}


def to_json(findings: Sequence[Finding]) -> str:
    return json.dumps([as_dict(f) for f in findings], indent=2) + "\n"


def sarif(findings: Sequence[Finding]) -> dict[str, Any]:
    codes = sorted(CODES)
    index = {c: i for i, c in enumerate(codes)}
    rules = [{
        "id": c, "name": CODES[c].name,
        "shortDescription": {"text": CODES[c].summary},
        "defaultConfiguration": {"level": _SARIF_LEVEL[CODES[c].severity]},
        "properties": {"istio": CODES[c].istio} if CODES[c].istio else {},
    } for c in codes]
    results = []
    for f in findings:
        location: dict[str, Any] = {"logicalLocations": [{
            "fullyQualifiedName": f"{f.object}".replace(" ", "/", 1)
            + (f"#{f.path}" if f.path else ""), "kind": "resource"}]}
        if f.file:
            location["physicalLocation"] = {
                "artifactLocation": {"uri": f.file},
                "region": {"startLine": max(f.line, 1)}}
        results.append({
            "ruleId": f.code.code, "ruleIndex": index[f.code.code],
            "level": _SARIF_LEVEL[f.severity],
            "message": {"text": f"{f.object} {f.path}: {f.message} (fix: {f.fix})"
                        if f.path else f"{f.object}: {f.message} (fix: {f.fix})"},
            "locations": [location]})
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [{
        "tool": {"driver": {"name": "controlplane analyze", "version": __version__,
                            "rules": rules}},
        "results": results}]}


def render(findings: Sequence[Finding], output: str) -> str:
    if output == "json":
        return to_json(findings)
    if output == "sarif":
        return json.dumps(sarif(findings), indent=2) + "\n"
    return text(findings)


def exit_code(findings: Sequence[Finding], strict: bool) -> int:
    """1 on any error, and on any warning with `strict`; else 0."""
    severities = {f.severity for f in findings}
    if Severity.ERROR in severities or (strict and Severity.WARNING in severities):
        return 1
    return 0
