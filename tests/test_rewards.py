"""The rewards ECPO optimises: preference (P-Score), format (random-k legal) and industrial."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from onerec.config import Config
from onerec.model import Batch
from onerec.reward import build_reward_model
from onerec.rewards import IndustrialRules, format_advantage, preference_reward
from tests.reward.util import VOCAB, random_codes


def test_preference_reward_is_the_pscore_of_each_sample_and_zero_for_no_video():
    torch.manual_seed(0)
    rm = build_reward_model(Config.from_preset("tiny"), random_codes(9), VOCAB)  # training mode
    ctx = Batch(user=torch.tensor([0, 1]), short=torch.tensor([[0, 3, 4], [5, 6, 7]]),
                pos=torch.tensor([[0, 2], [8, 9]]), long=torch.zeros(2, 1, dtype=torch.long))
    items = torch.tensor([[1, 2, 0, 5], [9, 0, 9, 3]])
    r = preference_reward(rm, ctx, items)
    assert r.shape == items.shape and rm.training  # scoring leaves the model's mode alone
    assert (r[items == 0] == 0).all()  # a sample naming no video earns nothing
    named = items > 0
    assert ((r[named] > 0) & (r[named] < 1)).all()
    with torch.no_grad():
        expect = rm.eval()(ctx, items)["pscore"]  # eval mode: no dropout noise in the reward
    torch.testing.assert_close(r[named], expect[named])
    assert r[1, 0] == r[1, 2]  # the same video for the same user: the same reward


def test_format_advantage_rewards_k_random_legal_samples_and_punishes_illegal():
    legal = torch.tensor([[True, True, True, False, True, False],
                          [True, True, True, True, True, True]])
    adv = format_advantage(legal, k=2, generator=torch.Generator().manual_seed(0))
    assert (adv[0][~legal[0]] < 0).all()
    assert int((adv[0] > 0).sum()) == 2 and (adv[0][legal[0]] >= 0).all()
    assert (adv[1] == 0).all()  # nothing illegal: nothing to learn
    picks = {tuple((format_advantage(legal[:1], 2, torch.Generator().manual_seed(s))[0] > 0)
                   .nonzero().flatten().tolist()) for s in range(20)}
    assert len(picks) > 1  # the chosen legal samples vary (random k, not the same ones)


def test_industrial_rules_demote_authors_and_boost_fresh_uploads():
    items = pd.DataFrame({"video_id": [10, 11, 12], "author_id": [1, 2, 3],
                          "upload_date": [20220501, 20220420, 20220430]})
    cfg = Config.from_preset("tiny", ["align.demoted_authors=[2]", "align.author_penalty=0.5",
                                      "align.fresh_days=3", "align.fresh_bonus=0.1"]).align
    rules = IndustrialRules.from_config(cfg, items, np.array([10, 11, 12, 99]))
    now = torch.tensor([pd.Timestamp("2022-05-02", tz="UTC").value // 10**6])
    r = rules(torch.tensor([[1, 2, 3, 4, 0]]), now)
    # item 10: fresh (1 day); 11: demoted, 12 days old; 12: 2 days; 99 unknown; 0 no video
    torch.testing.assert_close(r, torch.tensor([[0.1, -0.5, 0.1, 0.0, 0.0]]))
