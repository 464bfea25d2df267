"""The differential property as a long run: random sequences of source changes, reader
calls and publishes against one long-lived Store/SnapshotCache/PushLoop, each publish
compared, resource for resource and byte for byte, with a from-scratch translation of the
objects in force (the model and the comparison: tests/differential_model.py, which
tests/test_differential.py runs briefly in the suite).

    python -m benchmarks.differential --sequences 10000 --seed 1
        [--rounds 8 --changes 10] [--files] [--without-read configz]

`--files` puts the file source in front of the store: files on disk (duplicate
definitions across and within files), scans, and after each scan the store must hold
exactly the objects the files define.

Prints sequences run, steps, publishes (compared / history-dependent, see Tally),
rejections, differences found and the time, then the command that reproduces the run. On
a difference (or any exception) hypothesis shrinks the sequence, padding is dropped, and
the minimal failing one is printed step by step with what differs. Runs in batches of
1,000 sequences (each batch its own seed, derived from --seed): hypothesis keeps what
it explored per run, about 0.1 MB a sequence. Needs the `test` extra (hypothesis).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings

from controlplane import log
from tests.differential_model import (
    READS,
    Step,
    Tally,
    describe,
    file_steps,
    minimise,
    run_file_sequence,
    run_sequence,
    steps,
)

BATCH = 1000


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sequences", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rounds", type=int, default=8, help="publishes per sequence, at most")
    p.add_argument("--changes", type=int, default=10, help="steps per round, at most")
    p.add_argument("--files", action="store_true", help="the file source feeds the store")
    p.add_argument("--without-read", action="append", default=[], choices=READS,
                   help="leave a reader out (to run on past a known bug in it)")
    a = p.parse_args(argv)
    log.configure("critical")
    reads = tuple(r for r in READS if r not in a.without_read)
    tally = Tally()
    failure: list[tuple[list[Any], BaseException]] = []

    def one(sequence: list[Any]) -> None:
        if a.files:
            with tempfile.TemporaryDirectory() as directory:
                run_file_sequence(sequence, Path(directory), tally)
        else:
            run_sequence(sequence, tally=tally)

    strategy = (file_steps(a.rounds, a.changes) if a.files
                else steps(a.rounds, a.changes, reads))
    started = time.monotonic()
    for batch, start in enumerate(range(0, a.sequences, BATCH)):
        @seed(a.seed * 1_000_003 + batch)
        @settings(max_examples=min(BATCH, a.sequences - start), deadline=None,
                  database=None, phases=[Phase.generate, Phase.shrink], print_blob=False,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def run(sequence: list[Any]) -> None:
            try:
                one(sequence)
            except Exception as exc:
                failure[:] = [(sequence, exc)]  # the last one run is the shrunk one
                raise

        try:
            run()
        except Exception:  # hypothesis re-raises the minimal failure: reported below
            break
        print(f"  {tally.sequences} sequences, {time.monotonic() - started:.0f} s",
              file=sys.stderr, flush=True)
    took = time.monotonic() - started
    command = " ".join(["python -m benchmarks.differential", f"--sequences {a.sequences}",
                        f"--seed {a.seed}", f"--rounds {a.rounds}",
                        f"--changes {a.changes}", *(["--files"] if a.files else []),
                        *(f"--without-read {r}" for r in a.without_read)])
    print(f"sequences run:      {tally.sequences} (shrinking included)")
    print(f"steps:              {tally.steps}")
    print(f"publishes:          {tally.publishes} ({tally.compared} compared with a "
          f"from-scratch translation, {tally.history_dependent} history-dependent: a unit "
          "withheld or rejected)")
    print(f"objects rejected:   {tally.rejections} by the push loop, {tally.quarantined} "
          "quarantined after a NACK")
    print(f"differences found:  {1 if failure else 0}")
    print(f"time:               {took:.1f} s ({took / max(tally.sequences, 1) * 1000:.1f} "
          "ms per sequence)")
    print(f"reproduce:          {command}")
    if failure:
        report(failure[0], a.files)
        return 1
    return 0


def report(found: tuple[list[Any], BaseException], files: bool) -> None:
    sequence, exc = found
    if not files:  # the file runs need a directory each: hypothesis' shrink is kept
        steps_only: list[Step] = sequence
        sequence, again = minimise(steps_only)
        exc = again or exc
    print("\nminimal failing sequence (then a final "
          f"{'scan and ' if files else ''}publish comparing every proxy):")
    print(describe(sequence))
    print(f"\n{type(exc).__name__}: {exc}")
    print(f"\nas Python: {sequence!r}")


if __name__ == "__main__":
    sys.exit(main())
