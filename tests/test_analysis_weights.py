"""CP0112: weights that do not add up to 100."""

from __future__ import annotations

from pathlib import Path

from tests.analysis_helpers import line_of, only, run, virtual_service

CASE = virtual_service("""\
    http:
    - route:
      - {destination: {host: reviews}, weight: %d}
      - {destination: {host: reviews}, weight: 20}
    """)


def test_weights_not_adding_up(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, CASE % 60), "CP0112")
    assert (str(f.object), f.path) == ("VirtualService default/r", "spec.http[0].route")
    assert "add up to 80" in f.message and "reviews 75%" in f.message
    assert f.line == line_of(tmp_path, "- route:")


def test_weights_adding_up(tmp_path: Path) -> None:
    assert not only(run(tmp_path, CASE % 80), "CP0112")


def test_one_destination_needs_no_weight(tmp_path: Path) -> None:
    case = "\n".join(CASE.splitlines()[:-1]).replace("weight: %d", "weight: 30")
    assert not only(run(tmp_path, case), "CP0112")
