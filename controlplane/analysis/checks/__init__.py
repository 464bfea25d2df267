"""The checks: each a function from `Inputs` to findings, one module per subject.

A check never raises for odd input (it reports or skips), and reads only its inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from controlplane.analysis.findings import Finding
from controlplane.analysis.inputs import Inputs

Check = Callable[[Inputs], Iterable[Finding]]

CHECKS: list[Check] = []

from controlplane.analysis.checks import shadowed  # noqa: E402  (each check registers below)

CHECKS.append(shadowed.check)
