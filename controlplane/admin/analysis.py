"""The analysis of the published mesh, kept current for /debug/analyze and the
`controlplane_analysis_findings` gauge.

Analysing 1,000 services and 1,000 VirtualServices takes about 0.1 s
(`python -m benchmarks.analyze`), a hundred times the budget of anything on the publish
path. So a publish only marks the analysis stale; one task runs it in a worker thread on
the published Mesh and the objects it was built from (both immutable, read and never
moved forward: `store.published`), at most once per `interval`, and a burst of
publishes costs one run. What only the sources know (`SourceReport`: objects they
refused, CP0001; documents of kinds not served, CP0003/CP0004; objects several files
define differently, CP0005) may change without a publish: its version is looked at
once per `interval`. Findings are of the last analysed publish; `generation` says which.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import structlog

from controlplane.admin.metrics import Metrics
from controlplane.analysis import Locate, analyze
from controlplane.analysis.findings import CODES, Finding
from controlplane.analysis.inputs import Duplicate, Inputs, Invalid, field_error
from controlplane.model.errors import FieldError
from controlplane.model.meta import Key
from controlplane.store import Store

log = structlog.get_logger("controlplane.admin.analysis")


@dataclass(frozen=True)
class SourceReport:
    """What the sources know that the published mesh does not say, taken on the loop."""

    # objects refused (validation): key -> "path: message" errors
    refused: Mapping[Key, tuple[str, ...]] = field(default_factory=dict)
    # documents of kinds not served: key -> whether the kind is a real one
    unserved: Mapping[Key, bool] = field(default_factory=dict)
    # objects several files define differently: key -> (file served, other files, why
    # that one)
    duplicates: Mapping[Key, tuple[str, tuple[str, ...], str]] = field(default_factory=dict)
    # (file, key) -> first line of that file's document of key, 0 if unknown; called in
    # the analysis thread
    first_line: Callable[[str, Key], int] | None = field(default=None, compare=False)


class LiveAnalysis:
    def __init__(self, store: Store, metrics: Metrics,
                 report: Callable[[], SourceReport] = SourceReport,
                 locator: Callable[[], Locate | None] = lambda: None,
                 interval: float = 1.0,
                 report_version: Callable[[], object] = lambda: None) -> None:
        """`report`: what the sources know that the mesh does not say (the push loop's
        rejections come from the store). `report_version`: cheap, changes whenever
        `report` may have (compared once per `interval`; building the report is not
        cheap). `locator`: called on the loop before each run, where the sources'
        objects are written (a function the analysis thread may call), or None."""
        self.store, self.metrics, self.interval = store, metrics, interval
        self.report, self.locator, self.report_version = report, locator, report_version
        self._report_seen = SourceReport()
        self._version_seen: object = None
        self.findings: list[Finding] | None = None  # None: not analysed yet
        self.generation = 0  # of the publish analysed
        self._published = 0  # generation of the newest publish
        self._wake = asyncio.Event()
        for code in CODES.values():  # every series present from the start, at 0
            metrics.analysis_findings.labels(code=code.code,
                                             severity=code.severity.value).set(0)

    def published(self, generation: int) -> None:
        """A publish happened (push loop callback): cheap, never analyses here."""
        self._published = generation
        self._wake.set()

    def inputs(self) -> Inputs | None:
        """The published state, taken on the loop (the store is not thread-safe). The
        duplicates' lines are left for `located` (they read files: not on the loop)."""
        mesh = self.store.published
        if mesh is None:
            return None
        self._version_seen = self.report_version()  # first: a change meanwhile is seen
        report = self._report_seen = self.report()
        invalid = {key: Invalid(key, tuple(field_error(e) for e in errors))
                   for key, errors in report.refused.items()}
        for key, r in self.store.rejections.items():
            invalid[key] = Invalid(key, (FieldError("", f"refused ({r.by}): {r.reason}; serving "
                                          + ("its last good version" if r.serving is not None
                                             else "nothing")),))
        return Inputs(mesh, self.store.published_objects(),
                      tuple(invalid[k] for k in sorted(invalid, key=str)),
                      tuple(sorted(report.unserved.items(), key=lambda i: str(i[0]))))

    @staticmethod
    def located(inputs: Inputs, report: SourceReport) -> Inputs:
        """`inputs` with the report's duplicates, each file at its document's first
        line. In the analysis thread."""
        def at(file: str, key: Key) -> tuple[str, int]:
            return file, report.first_line(file, key) if report.first_line else 0
        return replace(inputs, duplicates=tuple(
            Duplicate(key, at(used, key), tuple(at(o, key) for o in others), why)
            for key, (used, others, why) in sorted(report.duplicates.items(),
                                                   key=lambda i: str(i[0]))))

    def _analyze(self, inputs: Inputs, report: SourceReport,
                 locate: Locate | None) -> list[Finding]:
        return analyze(self.located(inputs, report), locate)

    async def run(self) -> None:
        """The analysis task (App.tasks): cancelled with the push loop. Wakes on a
        publish, and once per `interval` to see whether what the sources report
        changed (an invalid document changes nothing published, so no publish says
        so)."""
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                if self.findings is None or self.report_version() == self._version_seen:
                    continue
            self._wake.clear()
            generation = self._published
            inputs = self.inputs()
            if inputs is not None:
                started = time.monotonic()
                findings = await asyncio.to_thread(self._analyze, inputs, self._report_seen,
                                                   self.locator())
                self._record(findings, generation)
                log.debug("analysed", generation=generation, findings=len(findings),
                          took_ms=round((time.monotonic() - started) * 1000, 1))
            await asyncio.sleep(self.interval)  # publishes meanwhile: one run after

    def _record(self, findings: list[Finding], generation: int) -> None:
        counts = dict.fromkeys(CODES, 0)
        for f in findings:
            counts[f.code.code] += 1
        for code, n in counts.items():
            self.metrics.analysis_findings.labels(
                code=code, severity=CODES[code].severity.value).set(n)
        self.findings, self.generation = findings, generation
