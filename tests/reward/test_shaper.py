"""The duration-aware watch-time target (OneRec-V2): a percentile within the duration bucket."""

from __future__ import annotations

import numpy as np

from onerec.reward import DurationShaper


def test_duration_shaper_ranks_watch_time_within_its_duration_bucket():
    rng = np.random.default_rng(0)
    short_d = np.full(1000, 10_000.0)
    long_d = np.full(1000, 300_000.0)
    dur = np.concatenate([short_d, long_d])
    play = np.concatenate([rng.uniform(0, 10_000, 1000), rng.uniform(0, 300_000, 1000)])
    shaper = DurationShaper.fit(dur, play, n_buckets=2)
    p = shaper(np.array([10_000.0, 10_000.0, 300_000.0]), np.array([2_000.0, 9_000.0, 9_000.0]))
    assert p[0] < p[1]  # longer watch, higher percentile
    assert p[1] > 0.8 and p[2] < 0.1  # 9 s is most of a short video, little of a long one
    assert np.all((p >= 0) & (p <= 1))
