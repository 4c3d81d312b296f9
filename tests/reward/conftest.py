"""The reward tests' data: the tiny synthetic dataset and its reward-model impressions, built
once per test file (module scope; `make test` distributes whole files)."""

from __future__ import annotations

import pytest
import torch

from onerec.config import Config
from onerec.data.synthetic import make_dataset
from onerec.reward import DurationShaper, reward_data
from tests.reward.util import random_codes


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one thread is faster than two fighting over a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
