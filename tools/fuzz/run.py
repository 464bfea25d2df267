"""Fuzz VirtualServices and DestinationRules through validation, translation and Envoy.

    python -m tools.fuzz.run --mutants 1000 --seed 1 [--batch 40] [--out DIR]
        [--no-envoy] [--live 20] [--only 17,42]

Each mutant (tools/fuzz/mutate.py) is parsed; a rejection must name the field. An
accepted one is translated and published (tools/fuzz/publish.py), and what a proxy would
be sent is loaded into `envoy --mode validate`, many mutants per run (tools/fuzz/envoy.py).
A translator exception, an Envoy rejection, a parser crash or a rejection that names no
field is a finding: its mutant YAML and the error go to DIR, and the exit status is 1.
`--live K` also feeds K accepted mutants to a live Envoy over ADS and compares.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import json_format

from controlplane import log
from controlplane.model.errors import ValidationError
from controlplane.model.parse import Object, parse_object
from tools.fuzz.envoy import Static, Validator, to_static
from tools.fuzz.mutate import Mutant, load_seeds, mutant
from tools.fuzz.publish import publish

FINDING_KINDS = ("parser-exception", "rejection-without-path", "translator-exception",
                 "envoy-rejection")


@dataclass
class Finding:
    kind: str  # one of FINDING_KINDS
    mutant: Mutant
    error: str


@dataclass
class Report:
    generated: int = 0
    rejected: int = 0
    accepted: int = 0
    withheld: int = 0  # accepted, but the pipeline withheld a unit (isolation)
    envoy_checked: int = 0
    envoy_runs: int = 0
    rejection_samples: list[str] = field(default_factory=list)
    withheld_samples: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    envoy_seconds: float = 0.0

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)


def _rejection_names_fields(exc: ValidationError, m: Mutant) -> bool:
    """Every error of the rejection names the object and a field path."""
    doc = m.doc
    meta = doc.get("metadata") or {}
    ref = f"{doc.get('kind')} {meta.get('namespace')}/{meta.get('name')}"
    return exc.ref == ref and bool(exc.errors) and all(e.path for e in exc.errors)


def check_one(m: Mutant, report: Report, statics: list[Static]) -> None:
    """Parse, translate and publish one mutant; findings and counts go to `report`, the
    static config for Envoy to `statics`."""
    report.generated += 1
    objects: list[Object] = []
    for i, doc in enumerate(m.docs):
        try:
            objects.append(parse_object(doc))
        except ValidationError as exc:
            if i != m.target:  # the seeds themselves must stay valid
                raise
            report.rejected += 1
            if len(report.rejection_samples) < 12 and exc.errors[0].path not in {
                    s.split(": ")[1] for s in report.rejection_samples if ": " in s}:
                report.rejection_samples.append(str(exc)[:200])
            if not _rejection_names_fields(exc, m):
                report.findings.append(Finding("rejection-without-path", m, str(exc)))
            return
        except Exception:
            report.findings.append(Finding("parser-exception", m, traceback.format_exc()))
            return
    report.accepted += 1
    try:
        published = publish(objects)
    except Exception:
        report.findings.append(Finding("translator-exception", m, traceback.format_exc()))
        return
    for w in published.withheld:
        if w.by == "translation":
            report.findings.append(Finding("translator-exception", m,
                                           f"{w.what}: {w.reason}"))
            return
    if published.withheld:
        report.withheld += 1
        if len(report.withheld_samples) < 8:
            report.withheld_samples.append("; ".join(f"{w.what}: {w.reason}"
                                                     for w in published.withheld)[:240])
    try:
        statics.append(to_static(m.index, published.resources))
    except (json_format.Error, ValueError) as exc:
        # Binary protobuf carries it, but it is out of the type's range (a Duration
        # past 10,000 years): Envoy's validation of the message rejects it.
        report.findings.append(Finding("envoy-rejection", m,
                                       f"out-of-range value (not sent to Envoy): {exc}"))


def run(n: int, seed: int, *, batch: int = 40, envoy: bool = True, start: int = 0,
        only: list[int] | None = None, validator: Validator | None = None) -> Report:
    seeds = load_seeds()
    report = Report()
    by_index: dict[int, Mutant] = {}
    started = time.perf_counter()
    pending: list[Static] = []
    validator = validator or (Validator() if envoy else None)

    def flush() -> None:
        if validator is None or not pending:
            pending.clear()
            return
        t = time.perf_counter()
        runs = validator.runs
        for index, message in validator.rejected(pending).items():
            report.findings.append(Finding("envoy-rejection", by_index[index], message))
        report.envoy_checked += len(pending)
        report.envoy_runs += validator.runs - runs
        report.envoy_seconds += time.perf_counter() - t
        pending.clear()

    for index in only if only is not None else range(start, start + n):
        m = mutant(seeds, seed, index)
        by_index[index] = m
        check_one(m, report, pending)
        if len(pending) >= batch:
            flush()
    flush()
    report.seconds = time.perf_counter() - started
    return report


_NORMALIZE = [(re.compile(r"'[^']*'|\"[^\"]*\""), "'…'"), (re.compile(r"\d+"), "N")]


def signature(f: Finding) -> str:
    """The finding's error with its particulars blanked, to group alike findings."""
    text = f.error.strip().splitlines()[-1] if f.kind != "envoy-rejection" else f.error
    for pattern, repl in _NORMALIZE:
        text = pattern.sub(repl, text)
    return f"{f.kind}: {text[:160]}"


def write_findings(report: Report, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for f in report.findings:
        error = "".join(f"# {line}\n" for line in f.error.strip().splitlines())
        (out / f"{f.kind}-{f.mutant.index}.yaml").write_text(
            f"# {f.kind}\n{error}{f.mutant.to_yaml()}")


def print_report(report: Report, n_seed: int, out: Path | None) -> None:
    rate = report.generated / report.seconds if report.seconds else 0.0
    print(f"seed {n_seed}: {report.generated} mutants in {report.seconds:.1f} s "
          f"({rate:.0f} mutants/s; Envoy: {report.envoy_checked} checked in "
          f"{report.envoy_runs} runs, {report.envoy_seconds:.1f} s)")
    print(f"  rejected by validation: {report.rejected}")
    for s in report.rejection_samples:
        print(f"    e.g. {s}")
    print(f"  accepted:               {report.accepted}")
    print(f"  withheld by isolation:  {report.withheld}")
    for s in report.withheld_samples:
        print(f"    e.g. {s}")
    for kind in FINDING_KINDS:
        print(f"  {kind + ':':<24}{report.count(kind)}")
    groups = Counter(signature(f) for f in report.findings)
    if groups:
        print("findings by kind of error:")
        for sig, count in groups.most_common():
            example = next(f for f in report.findings if signature(f) == sig)
            print(f"  {count:5}  {sig}\n         e.g. mutant {example.mutant.index}: "
                  f"{'; '.join(example.mutant.steps)[:200]}")
    if out is not None and report.findings:
        print(f"findings written to {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mutants", type=int, default=500)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--start", type=int, default=0, help="index of the first mutant")
    p.add_argument("--only", default="", help="comma-separated mutant indexes to replay")
    p.add_argument("--batch", type=int, default=40, help="mutants per Envoy validate run")
    p.add_argument("--out", type=Path, default=None,
                   help="directory for findings (default /tmp/fuzz-findings-SEED)")
    p.add_argument("--no-envoy", action="store_true", help="skip the Envoy check")
    p.add_argument("--live", type=int, default=0,
                   help="also feed this many accepted mutants to a live Envoy over ADS")
    a = p.parse_args(argv)
    log.configure("critical")
    only = [int(x) for x in a.only.split(",") if x] or None
    report = run(a.mutants, a.seed, batch=a.batch, envoy=not a.no_envoy, start=a.start,
                 only=only)
    out = a.out or Path(f"/tmp/fuzz-findings-{a.seed}")
    write_findings(report, out)
    print_report(report, a.seed, out)
    status = 1 if report.findings else 0
    if a.live:
        from tools.fuzz.live import compare_live
        mismatches = compare_live(a.seed, a.live, start=a.start, total=a.mutants)
        status = status or (1 if mismatches else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
