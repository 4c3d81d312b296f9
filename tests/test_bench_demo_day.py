"""bench.demo_day: which (beam width, transition prior) pairs one trained model is scored at."""

from __future__ import annotations

from bench.demo_day import settings
from bench.report import csv_of
from onerec.config import Config


def test_the_configs_own_setting_comes_first_and_once():
    cfg = Config.from_preset("small", ["serve.beam_width=32", "model.transition_prior=1"])
    assert settings(cfg, [], []) == [(32, 1.0)]
    got = settings(cfg, [32, 200], [0.0, 1.0])
    assert got == [(32, 1.0), (32, 0.0), (200, 0.0), (200, 1.0)]
    # only beams: each at the Config's prior; only priors: each at the Config's beam
    assert settings(cfg, [50], []) == [(32, 1.0), (50, 1.0)]
    assert settings(cfg, [], [3.0]) == [(32, 1.0), (32, 3.0)]


def test_csv_of_parses_comma_separated_lists():
    assert csv_of(int)("32, 50,200") == [32, 50, 200]
    assert csv_of(float)("0.3,1,") == [0.3, 1.0]
