"""Objects as written: refused by validation (CP0001), or fields accepted and ignored
(CP0002: the parsers' warnings, each "path: message")."""

from __future__ import annotations

from collections.abc import Iterator

from controlplane.analysis.checks.common import finding
from controlplane.analysis.findings import Finding
from controlplane.analysis.inputs import Inputs, field_error


def invalid(inputs: Inputs) -> Iterator[Finding]:
    for bad in inputs.invalid:
        for error in bad.errors or ():
            yield finding(
                "CP0001", bad.key, error.path, error.message,
                "correct the field; the object is not served until it validates (its "
                "last good version is, if it had one)")


def ignored(inputs: Inputs) -> Iterator[Finding]:
    for kind in ("VirtualService", "DestinationRule", "Sidecar"):  # those with warnings
        for obj in inputs.by_kind.get(kind, ()):
            for warning in getattr(obj, "warnings", ()):
                error = field_error(warning)
                yield finding("CP0002", obj, error.path, error.message,
                              "remove the field, or use the one the message names")


CHECKS = [invalid, ignored]
