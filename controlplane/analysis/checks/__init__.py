"""The checks: each a function from `Inputs` to findings, one module per subject.

A check never raises for odd input (it reports or skips), and reads only its inputs.
`CHECKS` is the list `analyze` runs; a new subject adds its module's checks here, one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from controlplane.analysis.checks import (
    conflicts,
    fields,
    headless,
    ports,
    references,
    shadowed,
    tls,
    weights,
    workloads,
)
from controlplane.analysis.findings import Finding
from controlplane.analysis.inputs import Inputs

Check = Callable[[Inputs], Iterable[Finding]]

CHECKS: list[Check] = []
CHECKS += fields.CHECKS
CHECKS += references.CHECKS
CHECKS += conflicts.CHECKS
CHECKS += weights.CHECKS
CHECKS += ports.CHECKS
CHECKS += tls.CHECKS
CHECKS += headless.CHECKS
CHECKS += workloads.CHECKS
CHECKS += shadowed.CHECKS
