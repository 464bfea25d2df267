"""The mutation fuzzer (tools/fuzz) in the suite: a fixed sample of mutated
VirtualServices and DestinationRules is either rejected naming the field, or translated
without an exception into config a real Envoy accepts (validate mode, and a few over ADS).

Everything goes through `tools.fuzz.publish.publish`, the push loop's path (per-object
isolation included): an object the isolation withholds is not a failure, a crash is.
"""

from __future__ import annotations

import pytest

from controlplane.model.parse import parse_object
from tools.fuzz.envoy import Validator, to_static
from tools.fuzz.live import compare_live
from tools.fuzz.mutate import load_seeds, mutant
from tools.fuzz.publish import publish
from tools.fuzz.run import FINDING_KINDS, run

SEED = 20261202
MUTANTS = 400


@pytest.mark.e2e
def test_fuzzed_objects_are_rejected_by_field_or_accepted_by_envoy() -> None:
    report = run(MUTANTS, SEED, batch=50)
    details = "\n".join(f"{f.kind} mutant {f.mutant.index} ({'; '.join(f.mutant.steps)}): "
                        f"{f.error.strip()[-400:]}" for f in report.findings[:10])
    assert {k: report.count(k) for k in FINDING_KINDS} == dict.fromkeys(FINDING_KINDS, 0), \
        details
    # Enough of both outcomes that the sample means something.
    assert report.generated == MUTANTS
    assert report.rejected >= MUTANTS // 5 and report.accepted >= MUTANTS // 5, report
    assert report.envoy_checked == report.accepted  # every accepted one went to Envoy


@pytest.mark.e2e
def test_validate_batches_pin_a_rejection_to_its_mutant() -> None:
    """The Envoy check can fail: one broken mutant among good ones is found by halving."""
    seeds = {s.name: s for s in load_seeds()}
    good = [to_static(i, publish([parse_object(d) for d in seeds["policies"].docs])
                      .resources) for i in range(5)]
    bad = to_static(99, publish([parse_object(d) for d in seeds["tcp"].docs]).resources)
    bad.clusters[0]["connectTimeout"] = "0s"  # Envoy: must be greater than 0s
    rejected = Validator().rejected([*good[:3], bad, *good[3:]])
    assert list(rejected) == [99]
    assert "ConnectTimeout" in rejected[99], rejected


def test_mutants_are_deterministic_and_seeds_valid() -> None:
    seeds = load_seeds()
    for seed in seeds:
        for doc in seed.docs:
            parse_object(doc)  # every seed document is valid as written
    assert mutant(seeds, SEED, 7).to_yaml() == mutant(seeds, SEED, 7).to_yaml()
    assert mutant(seeds, SEED, 7).to_yaml() != mutant(seeds, SEED, 8).to_yaml()


@pytest.mark.e2e
def test_live_envoy_over_ads_agrees_with_validate_mode() -> None:
    assert compare_live(SEED, 5, total=200) == []
