"""CP0001, CP0002: objects refused by validation; fields accepted and ignored. And the
analysis itself: a failing check is a finding, not a crash; locations fall back to the
nearest written parent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.analysis import analyze
from controlplane.analysis.inputs import Inputs
from controlplane.sources.locations import locate
from tests.analysis_helpers import line_of, only, run, virtual_service

BAD = virtual_service("""\
    http:
    - route:
      - destination: {host: reviews}
        weight: -1
    """)


def test_invalid_object(tmp_path: Path) -> None:
    found = run(tmp_path, BAD)
    [f] = only(found, "CP0001")
    assert (str(f.object), f.path) == ("VirtualService default/r",
                                       "spec.http[0].route[0].weight")
    assert f.line == line_of(tmp_path, "weight: -1")
    assert f.file.endswith("case.yaml")


def test_valid_object(tmp_path: Path) -> None:
    assert not only(run(tmp_path, BAD.replace("weight: -1", "weight: 100")), "CP0001")


IGNORED = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  workloadSelector: {matchLabels: {app: x}}
"""


def test_ignored_field(tmp_path: Path) -> None:
    [f] = only(run(tmp_path, IGNORED), "CP0002")
    assert (str(f.object), f.path) == ("DestinationRule default/reviews",
                                       "spec.workloadSelector")
    assert "not supported" in f.message
    assert f.line == line_of(tmp_path, "workloadSelector")


def test_no_ignored_field(tmp_path: Path) -> None:
    assert not only(run(tmp_path, "\n".join(IGNORED.splitlines()[:-1])), "CP0002")


def test_a_failing_check_is_a_finding() -> None:
    def broken(inputs: Inputs) -> list:  # type: ignore[type-arg]
        raise KeyError("boom")

    [f] = analyze(Inputs.of({}), checks=[broken])
    assert f.code.code == "CP0999" and "broken" in f.message and "KeyError" in f.message


def test_locations_fall_back_to_the_nearest_parent() -> None:
    text = "---\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  http:\n  - route: []\n"
    [(key, lines)] = locate(text, "f.yaml").items()
    assert str(key) == "VirtualService default/a"
    assert lines.line_of("spec.http[0].route") == 6
    assert lines.line_of("spec.http[0].mirror.host") == 6
    assert lines.line_of("spec.tcp[3]") == 4
    assert lines.line_of("nothing.here") == 2 == lines.line
    assert locate("{not yaml", "f.yaml") == {}


def test_unknown_and_unserved_kinds(tmp_path: Path) -> None:
    found = run(tmp_path, """\
        apiVersion: networking.istio.io/v1
        kind: VirtualServce
        metadata: {name: typo, namespace: default}
        ---
        apiVersion: networking.istio.io/v1
        kind: ServiceEntry
        metadata: {name: external, namespace: default}
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: reviews, namespace: default}
        """)
    [typo] = only(found, "CP0003")
    assert (str(typo.object), typo.path) == ("VirtualServce default/typo", "kind")
    assert typo.line == line_of(tmp_path, "kind: VirtualServce")
    [entry] = only(found, "CP0004")
    assert str(entry.object) == "ServiceEntry default/external"
    assert not [f for f in found if f.object.kind == "Deployment"]


def test_served_kinds_are_not_reported(tmp_path: Path) -> None:
    found = run(tmp_path, "")
    assert not only(found, "CP0003") and not only(found, "CP0004")


def test_every_code_has_its_tests() -> None:
    """The registry's promise: each code is triggered by some test (its smallest YAML)
    in tests/test_analysis_*.py."""
    from controlplane.analysis.findings import CODES

    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_analysis_*.py"))
    untested = [c for c in CODES if c not in tests]
    assert not untested


def test_no_check_fails_on_any_golden_case() -> None:
    """Every golden case's input (the widest variety of valid configuration the project
    has) is analysed without a check failing, and the findings come out sorted."""
    from controlplane.sources.snapshot import read_directory
    from tests.analysis_helpers import inputs_of

    cases = sorted((Path(__file__).parent / "golden").glob("*/in.yaml"))
    assert len(cases) > 20
    for case in cases:
        files = read_directory(case)
        found = analyze(inputs_of(files), files.where)
        assert not only(found, "CP0999"), (case, only(found, "CP0999"))
        assert found == sorted(found, key=lambda f: (f.file, f.line, f.code.code,
                                                     f.object.kind, f.object.namespace,
                                                     f.object.name, f.path))


def test_list_items_and_a_single_file_are_located(tmp_path: Path) -> None:
    from controlplane.sources.snapshot import read_directory

    path = tmp_path / "list.yaml"
    path.write_text("kind: List\nitems:\n- apiVersion: v1\n  kind: Service\n"
                    "  metadata: {name: a, namespace: default}\n"
                    "  spec: {ports: [{name: web, port: 80}]}\n")
    files = read_directory(path)
    [key] = files.objects
    assert files.where(key, "spec.ports[0].name") == (str(path), 6)
    assert files.where(key, "") == (str(path), 3)


DUP = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {selector: {app: web}, ports: [{name: http, port: %d}]}
"""


def test_object_defined_differently_by_two_files(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from controlplane.cli import main

    (tmp_path / "a.yaml").write_text("# the old one\n" + DUP % 80)
    (tmp_path / "b.yaml").write_text(DUP % 8080)
    assert main(["analyze", "-f", str(tmp_path), "-o", "json"]) == 0
    [f] = [f for f in json.loads(capsys.readouterr().out) if f["code"] == "CP0005"]
    # On the definition not served, at its own line, naming the one served.
    assert (f["file"], f["line"]) == (str(tmp_path / "a.yaml"), 2)
    assert f"{tmp_path / 'b.yaml'}:1" in f["message"] and "served" in f["message"]
    assert f["object"] == {"kind": "Service", "namespace": "default", "name": "web"}


def test_same_object_twice_alike_is_no_conflict(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from controlplane.cli import main

    (tmp_path / "a.yaml").write_text("# a copy\n" + DUP % 80)
    (tmp_path / "b.yaml").write_text(DUP % 80)
    assert main(["analyze", "-f", str(tmp_path)]) == 0
    assert "CP0005" not in capsys.readouterr().out
