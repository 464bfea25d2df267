"""The interactive demo's pace: slow enough for a person to watch the split change,
redrawn often enough to look like traffic moving. The interactive test in test_demo.py
counts the redraws a real run makes; here, the configuration they follow."""

from __future__ import annotations

from controlplane.demo.story import LIVE_PACE, REQUESTS, Pace


def test_a_probe_takes_seconds_and_its_tally_is_redrawn_several_times_a_second() -> None:
    assert 3 <= LIVE_PACE.seconds(REQUESTS) <= 6
    assert LIVE_PACE.redraws_per_second >= 5
    # every redraw_every requests at `rate`: that many redraws a second
    assert LIVE_PACE.rate / LIVE_PACE.redraw_every == LIVE_PACE.redraws_per_second
    assert LIVE_PACE.redraws(REQUESTS) == LIVE_PACE.seconds(REQUESTS) * \
        LIVE_PACE.redraws_per_second


def test_redraws_count_the_last_partial_batch_and_never_skip() -> None:
    pace = Pace(rate=50, redraws_per_second=10)  # every 5 requests
    assert [pace.redraws(n) for n in (1, 4, 5, 6, 100, 101)] == [1, 1, 1, 2, 20, 21]
    assert Pace(rate=5, redraws_per_second=10).redraw_every == 1  # at most once a request
