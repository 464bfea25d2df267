"""The incremental push path equals a from-scratch translation (tests/differential_model.py).

Random sequences of source changes, reader calls and publishes run against one long-lived
Store, SnapshotCache and PushLoop; after every publish the snapshot (clusters, endpoints,
and listeners and routes for several proxy groups: names, versions, bytes) and the Mesh's
problems must equal what a fresh Store, cache and push loop publish from the objects in
force. A second, slower property puts the file source in front (duplicate definitions
across and within files). Derandomized and database-free, so every run explores the same
sequences; the long run is `python -m benchmarks.differential [--files]`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, note, settings

from controlplane import log as logsetup
from tests.differential_model import (
    Apply,
    FileStep,
    Publish,
    Read,
    RemoveFile,
    Replace,
    Scan,
    Step,
    Tally,
    WriteFile,
    describe,
    file_steps,
    run_file_sequence,
    run_sequence,
    steps,
)

# The same sequences every run, nothing remembered between runs, no deadline (a publish
# from scratch per publish). No "explain" phase: on a failure it re-ran variations for a
# minute to annotate them.
BASE = settings(deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.generate, Phase.shrink),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(autouse=True)
def _quiet() -> None:
    """Thousands of publishes each log their mesh problems and rejections: rendering
    those lines cost most of the run. (conftest sets the level back for the next test.)"""
    logsetup.configure("critical", cache=False)


# Two changes that fall into one push, with a reader in between. When a reader's
# store.mesh() built a Mesh and took the journal with it (the store before the
# build/commit split), the next push saw only the second change: the web service was not
# dirty, its endpoints were carried over, and the snapshot kept p1's old address 10.0.0.1.
BUG_A: list[Step] = [
    Apply("Service a/web", (0, 0, 0)),
    Apply("Service a/api", (0, 0)),
    Apply("Pod a/p1", (0, 0, 1, 0, 0)),  # app=web, 10.0.0.1
    Apply("Pod a/p3", (2, 2, 1, 0, 0)),  # app=api, 10.0.0.3
    Publish((0,)),
    Apply("Pod a/p1", (0, 1, 1, 0, 0)),  # moves to 10.0.0.2
    Read("configz"),
    Apply("Pod a/p3", (2, 3, 1, 0, 0)),  # moves to 10.0.0.4
    Publish((0,)),
]

# The same through a slice naming pods (targetRef), whose labels feed the service's
# subsets: the old store kept p1 in subset v1 after it was relabelled v2.
SLICE_PODS: list[Step] = [
    Apply("Service a/api", (0, 0)),
    Apply("DestinationRule a/dr1", (1, 1, 0, 0)),  # api: subsets v1, v2
    Apply("EndpointSlice a/api-1", (0, 0, ((0, 0, 1, 0), (1, 1, 1, 0)))),
    Apply("Pod a/p1", (2, 0, 1, 0, 0)),
    Publish((0, 1)),
    Apply("Pod a/p1", (1, 0, 1, 0, 0)),  # relabelled: version v2
    Read("mesh"),
    Read("problems"),
    Apply("EndpointSlice a/api-2", (1, 0, ((2, 2, 1, 0),))),  # a slice of web
    Publish((0, 1)),
]

# Duplicate definitions in one relist (the last wins), then the relist without one of
# them: the object stays. (The file source's form of this is TWO_DEFINITIONS below.)
DUPLICATES: list[Step] = [
    Apply("Service a/web", (0, 0, 0)),
    Replace("VirtualService", (("VirtualService a/vs1", (0, 1, 0)),
                               ("VirtualService a/vs1", (0, 0, 0))), "a"),
    Publish((0,)),
    Replace("VirtualService", (("VirtualService a/vs1", (0, 0, 0)),), "a"),
    Publish((0, 1, 2)),
]


@settings(BASE, max_examples=1000)
@given(steps())
@example(BUG_A)
@example(SLICE_PODS)
@example(DUPLICATES)
def test_incremental_publish_equals_a_translation_from_scratch(sequence: list[Step]) -> None:
    note(describe(sequence))
    run_sequence(sequence)


def test_the_sequences_reach_what_the_property_is_about() -> None:
    """The generated sequences must actually compare publishes, including some after a
    rejection or a quarantine, or the property above proves little."""
    tally = Tally()

    @settings(BASE, max_examples=150)
    @given(steps())
    def run(sequence: list[Step]) -> None:
        run_sequence(sequence, tally=tally)

    run()
    assert tally.compared >= 3 * tally.sequences, tally
    assert tally.rejections > 0 and tally.quarantined > 0, tally
    assert tally.history_dependent < tally.compared / 5, tally


# Bug (b): two files define one VirtualService; removing one definition (the file, or the
# object from it) must leave the other served, not delete the object.
TWO_DEFINITIONS: list[FileStep] = [
    WriteFile(0, (("Service a/web", (0, 0, 0)), ("VirtualService a/vs1", (0, 0, 0)))),
    WriteFile(1, (("VirtualService a/vs1", (0, 1, 0)),)),
    Scan(),
    Publish((0,)),
    WriteFile(1, ()),
    Scan(),
    Publish((0,)),
    WriteFile(1, (("VirtualService a/vs1", (0, 3, 0)),)),
    Scan(),
    RemoveFile(0),
    Scan(),
    Publish((0,)),
]


@settings(BASE, max_examples=200)
@given(file_steps())
@example(TWO_DEFINITIONS)
def test_the_file_source_then_the_incremental_path_equal_a_translation_from_scratch(
        sequence: list[FileStep]) -> None:
    """Slower (files on disk, scans): the store holds exactly the objects the files
    define, whatever the duplicates, and each publish equals one from scratch."""
    note(describe(sequence))
    with tempfile.TemporaryDirectory() as directory:
        run_file_sequence(sequence, Path(directory))
