"""Route weights that do not add up to 100 (CP0112).

Weights are relative here, as in Istio since 1.x and in Envoy: each destination gets its
weight over the sum. A sum other than 100 is still most often a mistake (a split edited
on one side only), and the percentages people read from the YAML are not the ones
served; the finding says which are.
"""

from __future__ import annotations

from collections.abc import Iterator

from controlplane.analysis.checks.common import finding, of_kind
from controlplane.analysis.findings import Finding
from controlplane.analysis.inputs import Inputs
from controlplane.model.virtual_service import VirtualService, WeightedDestination


def _name(d: WeightedDestination) -> str:
    dest = d.destination
    return f"{dest.host}/{dest.subset}" if dest.subset else dest.host


def _served(dests: tuple[WeightedDestination, ...], total: int) -> str:
    return ", ".join(f"{_name(d)} {100 * d.weight / total:.4g}%" for d in dests)


def weights(inputs: Inputs) -> Iterator[Finding]:
    for vs in of_kind(inputs, VirtualService):
        sections = [("http", [r.route for r in vs.http]), ("tcp", [r.route for r in vs.tcp]),
                    ("tls", [r.route for r in vs.tls])]
        for section, routes in sections:
            for i, dests in enumerate(routes):
                if len(dests) < 2:
                    continue  # one destination takes everything, whatever its weight
                total = sum(d.weight for d in dests)
                if total == 100 or total == 0:  # 0: refused by the parser
                    continue
                yield finding(
                    "CP0112", vs, f"spec.{section}[{i}].route",
                    f"the weights add up to {total}, not 100; traffic splits by weight over "
                    f"their sum: {_served(dests, total)}",
                    "make the weights add up to 100 so they read as the percentages served")


CHECKS = [weights]
