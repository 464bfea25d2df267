"""`controlplane analyze`: output formats, exit codes, --strict, usage errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.analysis.findings import CODES
from controlplane.cli import main
from tests.analysis_helpers import virtual_service

EXAMPLE = Path(__file__).parents[1] / "config" / "analyze-example"

WARNING_ONLY = """\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ports: [{name: web, port: 8080}]
"""


def analyze(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["analyze", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_text_one_line_per_finding_and_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = analyze(capsys, "-f", str(EXAMPLE))
    lines = out.splitlines()
    assert code == 1  # the example has errors
    assert lines[-1] == "9 findings (2 errors, 7 warnings) in 6 objects"
    assert lines[0].startswith("ERROR   CP0102 ")
    assert (f"VirtualService shop/reviews {EXAMPLE}/routing.yaml:9 "
            "spec.http[0].route[0].destination.subset: subset 'v3'") in lines[0]
    assert all("(fix: " in line for line in lines[:-1])


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = analyze(capsys, "-f", str(EXAMPLE), "-o", "json")
    findings = json.loads(out)
    assert code == 1 and len(findings) == 9
    f = findings[0]
    assert (f["code"], f["severity"], f["object"], f["line"], f["path"]) == (
        "CP0102", "error", {"kind": "VirtualService", "namespace": "shop", "name": "reviews"},
        9, "spec.http[0].route[0].destination.subset")
    assert f["file"].endswith("routing.yaml") and f["fix"] and f["istio"] == "IST0101"


def test_sarif_is_structurally_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = analyze(capsys, "-f", str(EXAMPLE), "-o", "sarif")
    doc = json.loads(out)
    assert code == 1 and doc["version"] == "2.1.0" and "sarif-2.1.0" in doc["$schema"]
    [run] = doc["runs"]
    rules = run["tool"]["driver"]["rules"]
    ids = [r["id"] for r in rules]
    assert ids == sorted(CODES) and all(r["name"] and r["shortDescription"]["text"]
                                        for r in rules)
    results = run["results"]
    assert len(results) == 9
    for result in results:
        assert result["ruleId"] in ids
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note")
        assert result["message"]["text"]
        [location] = result["locations"]
        physical = location["physicalLocation"]
        assert physical["artifactLocation"]["uri"].startswith(str(EXAMPLE))
        assert physical["region"]["startLine"] >= 1
    levels = {r["ruleId"]: r["level"] for r in results}
    assert levels["CP0001"] == "error" and levels["CP0120"] == "warning"


def test_clean_input_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text(WARNING_ONLY.replace("name: web, port", "name: http, "
                                                          "port"))
    code, out, _ = analyze(capsys, "-f", str(tmp_path), "--strict")
    assert (code, out) == (0, "no findings\n")


def test_warnings_fail_only_with_strict(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text(WARNING_ONLY)
    code, out, _ = analyze(capsys, "-f", str(tmp_path))
    assert code == 0 and "WARNING CP0120 Service default/web" in out
    code, _, _ = analyze(capsys, "-f", str(tmp_path), "--strict")
    assert code == 1


def test_usage_and_unreadable_input_exit_2(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = analyze(capsys)
    assert code == 2 and "give -f PATH" in err
    code, _, err = analyze(capsys, "-f", str(tmp_path / "missing"))
    assert code == 2 and "no such directory" in err
    (tmp_path / "bad.yaml").write_text("a: [unclosed\n")
    code, _, err = analyze(capsys, "-f", str(tmp_path))
    assert code == 2 and "invalid YAML" in err
    (tmp_path / "bad.yaml").write_text("- a list, not an object\n")
    code, _, err = analyze(capsys, "-f", str(tmp_path))
    assert code == 2 and "not a mapping" in err
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "-o", "xml"])
    assert exc.value.code == 2


def test_later_file_arguments_win(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "s.yaml").write_text(WARNING_ONLY)
    (tmp_path / "b" / "s.yaml").write_text(WARNING_ONLY.replace("name: web, port",
                                                                "name: http, port"))
    assert analyze(capsys, "-f", str(tmp_path / "a"), "-f", str(tmp_path / "b"))[1] == (
        "no findings\n")


def test_re2_syntax_prints_no_python_warning(tmp_path: Path) -> None:
    # `[[:alpha:]]` is RE2 syntax on which Python's parser (used to sample what a regex
    # matches) warns of its own future semantics: noise, and not about the input.
    # A process of its own: warnings show once per location, and pytest records them.
    (tmp_path / "vs.yaml").write_text("""\
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {selector: {app: web}, ports: [{name: http, port: 8080}]}
---
""" + virtual_service("""\
        http:
        - match: [{uri: {regex: "/[[:alpha:]]+"}}]
          route: [{destination: {host: web}}]
        - route: [{destination: {host: web}}]
        """, name="web", hosts="[web]"))
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c",
         "import sys; from controlplane.cli import main; sys.exit(main(sys.argv[1:]))",
         "analyze", "-f", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "Warning" not in done.stdout, done.stderr
    assert done.stdout.endswith("no findings\n"), done.stdout
