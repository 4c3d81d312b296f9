"""The rewards ECPO optimises: preference (P-Score), format (random-k legal) and industrial."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from onerec.config import Config
from onerec.ecpo import Rewarder
from onerec.model import Batch
from onerec.reward import build_reward_model
from onerec.rewards import (
    IndustrialRules,
    format_advantage,
    format_choice,
    preference_reward,
    redundancy,
)
from onerec.trie import ItemTrie
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
    adv = format_advantage(legal, format_choice(legal, 2,
                                                 generator=torch.Generator().manual_seed(0)))
    assert (adv[0][~legal[0]] < 0).all()
    assert int((adv[0] > 0).sum()) == 2 and (adv[0][legal[0]] >= 0).all()
    assert (adv[1] == 0).all()  # nothing illegal: nothing to learn
    picks = {tuple((format_advantage(legal[:1], format_choice(
        legal[:1], 2, generator=torch.Generator().manual_seed(s)))[0] > 0)
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


def test_redundancy_is_the_share_of_the_other_legal_samples_in_the_same_cluster():
    keys = torch.tensor([[3, 3, 3, 3], [1, 2, 3, 4], [5, 5, 6, 5]])
    valid = torch.tensor([[True] * 4, [True] * 4, [True, True, True, False]])
    torch.testing.assert_close(redundancy(keys, valid), torch.tensor(
        [[1.0, 1.0, 1.0, 1.0],  # one cluster: every sample duplicated by all the others
         [0.0, 0.0, 0.0, 0.0],  # all distinct: nothing to penalise
         [0.5, 0.5, 0.0, 0.0]]))  # the illegal 4th sample neither counts nor is penalised


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_the_diversity_reward_subtracts_exactly_the_weight_times_the_redundancy(weight):
    """align.diversity_weight reaches the reward ECPO normalises: 0 leaves it the P-Score,
    w > 0 lowers a sample by w x the share of its group in the same first-level cluster, so
    the advantage moves from crowded clusters to rare ones."""
    torch.manual_seed(0)
    # row 0 pads; items 1-3 in first-level cluster 0, items 4, 5, 6 alone in clusters 1-3
    codes = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 2, 2], [1, 0, 0], [2, 0, 0],
                          [3, 1, 1]])
    rm = build_reward_model(Config.from_preset("tiny"), codes, VOCAB).eval()
    cfg = Config.from_preset("tiny", [f"align.diversity_weight={weight}",
                                      "align.format_weight=0"]).align
    rewarder = Rewarder(cfg, rm, ItemTrie.from_codes(codes, VOCAB), None,
                        torch.Generator().manual_seed(0))
    ctx = Batch(user=torch.tensor([0]), short=torch.tensor([[0, 3, 4]]),
                pos=torch.tensor([[0, 2]]), long=torch.zeros(1, 1, dtype=torch.long))
    sampled = codes[[1, 2, 3, 4, 5]].unsqueeze(0)  # three samples in cluster 0, two alone
    out = rewarder(ctx, sampled, torch.zeros(1))
    share = torch.tensor([[1.0, 1.0, 1.0, 0.0, 0.0]]) / 2  # 2 of the 4 others share cluster 0
    torch.testing.assert_close(out["reward"], out["pscore"] - weight * share)
    crowded, alone = out["adv"][0, :3].mean(), out["adv"][0, 3:].mean()
    pscore_gap = float(out["pscore"][0, :3].mean() - out["pscore"][0, 3:].mean())
    if weight >= 1.0:  # a large weight outweighs any P-Score gap: the rare clusters gain
        assert pscore_gap < weight / 2 and alone > crowded
