"""The reward tests' data: the tiny synthetic dataset and its reward-model impressions, built
once per test file (module scope; `make test` distributes whole files)."""

from __future__ import annotations

import pytest

from onerec.config import Config
from onerec.data.synthetic import make_dataset
from onerec.reward import DurationShaper, reward_data
from tests.reward.util import random_codes


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Every reward test module runs its tiny models on one thread (tests/conftest.py)."""
    yield


@pytest.fixture(scope="module")
def tiny():
    """(cfg, dataset, video ids, random codes, fitted DurationShaper, RewardData)."""
    cfg = Config.from_preset("tiny", ["reward.steps=40"])
    ds = make_dataset(cfg.data)
    item_ids = ds.items["video_id"].to_numpy()
    index = {int(v): i + 1 for i, v in enumerate(item_ids)}
    ev = ds.events
    shaper = DurationShaper.fit(ev["duration_ms"].to_numpy(), ev["play_time_ms"].to_numpy(),
                                cfg.reward.duration_buckets)
    data = reward_data(ev, index, cfg, shaper)
    codes = random_codes(len(item_ids))
    return cfg, ds, item_ids, codes, shaper, data
