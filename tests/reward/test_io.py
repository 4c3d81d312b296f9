"""The saved reward model: a round trip, refused when made with another codebook."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onerec.reward import RewardModelError, load_reward_model, predict, save_reward_model
from tests.reward.util import make_rm


def test_save_load_round_trip_and_codebook_refusal(tmp_path, tiny):
    cfg, _ds, item_ids, codes, shaper, data = tiny
    rm = make_rm(cfg, codes, item_ids).eval()
    path = save_reward_model(tmp_path / "rm", rm, cfg, shaper, {"click": {"auc": 0.7}})
    back, cfg2, shaper2 = load_reward_model(path, "cb-test")
    assert cfg2 == cfg and shaper2 is not None
    np.testing.assert_array_equal(back.item_ids, item_ids)
    idx = np.arange(50)
    np.testing.assert_allclose(predict(back, data, idx)["pscore"], predict(rm, data, idx)["pscore"])
    with pytest.raises(RewardModelError, match="codebook"):
        load_reward_model(path, "another-codebook")
    with pytest.raises(RewardModelError, match="missing"):
        load_reward_model(tmp_path / "nowhere")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "codebook_fingerprint": None}))
    with pytest.raises(RewardModelError, match="records no codebook fingerprint"):
        load_reward_model(path, "cb-test")
