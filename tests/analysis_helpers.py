"""Analysing small YAML the way `controlplane analyze -f DIR` does: written to a
directory, read by the loader, analysed with file:line locations."""

from __future__ import annotations

import textwrap
from pathlib import Path

from controlplane.analysis import analyze
from controlplane.analysis.findings import Finding
from controlplane.analysis.inputs import Inputs, Invalid, field_error
from controlplane.sources.snapshot import DirectoryRead, read_directory

# A service with two versions of pods: what most cases route to.
BASE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v1, namespace: default, labels: {app: reviews, version: v1}}
spec: {containers: [{name: app, image: demo}]}
status: {phase: Running, podIP: 10.0.0.1, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: default, labels: {app: reviews, version: v2}}
spec: {containers: [{name: app, image: demo}]}
status: {phase: Running, podIP: 10.0.0.2, conditions: [{type: Ready, status: "True"}]}
"""


# Text, not tests/manifests.py's dicts: findings are located by the file's lines.
def virtual_service(spec: str, name: str = "r", hosts: str = "[reviews]") -> str:
    """A VirtualService default/`name` for `hosts`; `spec` (dedented) is the rest of its
    spec: what the test is about, kept in the test."""
    return ("apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
            f"metadata: {{name: {name}, namespace: default}}\nspec:\n  hosts: {hosts}\n"
            + textwrap.indent(textwrap.dedent(spec), "  "))


def destination_rule(spec: str, host: str = "reviews") -> str:
    """A DestinationRule default/`host` for `host`; `spec` (dedented) is the rest of its
    spec."""
    return ("apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
            f"metadata: {{name: {host}, namespace: default}}\nspec:\n  host: {host}\n"
            + textwrap.indent(textwrap.dedent(spec), "  "))


def inputs_of(files: DirectoryRead) -> Inputs:
    return Inputs.of(files.objects, tuple(
        Invalid(k, tuple(field_error(e) for e in r.errors)) for k, r in files.rejected.items()),
        tuple(files.unserved.items()))


def run(tmp_path: Path, case: str, base: str = BASE) -> list[Finding]:
    """Findings of `case` (dedented) in case.yaml, beside `base` in base.yaml."""
    if base:
        (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "case.yaml").write_text(textwrap.dedent(case))
    files = read_directory(tmp_path)
    assert not files.errors, files.errors
    return analyze(inputs_of(files), files.where)


def only(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code.code == code]


def line_of(tmp_path: Path, text: str, name: str = "case.yaml") -> int:
    """The 1-based line of case.yaml holding `text` (exactly one)."""
    lines = [i for i, line in enumerate((tmp_path / name).read_text().splitlines(), 1)
             if text in line]
    assert len(lines) == 1, (text, lines)
    return lines[0]
