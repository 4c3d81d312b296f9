"""Helpers the reward tests share: a small random item space and a reward model over it."""

from __future__ import annotations

import numpy as np
import torch

from onerec.config import Config
from onerec.model import Batch
from onerec.reward import RewardData, RewardModel, build_reward_model, save_reward_model

VOCAB = [4, 4, 3]


def random_codes(n_items: int, seed: int = 0) -> torch.Tensor:
    """(n_items + 1, L) semantic IDs over VOCAB, row 0 the padding item."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.stack([torch.randint(0, k, (n_items,), generator=g) for k in VOCAB], 1)
    return torch.cat([torch.zeros(1, len(VOCAB), dtype=torch.long), codes])


def make_rm(cfg: Config, codes: torch.Tensor, item_ids) -> RewardModel:
    """An untrained reward model over `codes`, tagged with the test codebook "cb-test"."""
    rm = build_reward_model(cfg, codes, VOCAB)
    rm.item_ids = np.asarray(item_ids)
    rm.codebook_fingerprint = "cb-test"
    return rm


def contexts(data: RewardData, n: int) -> Batch:
    """The user contexts of the first `n` requests of `data`."""
    r = data.reqs
    return Batch(user=torch.from_numpy(r.user[:n]), short=torch.from_numpy(r.short[:n]),
                 pos=torch.from_numpy(r.pos[:n]), long=torch.from_numpy(r.long[:n]))


def save_space_rm(cfg: Config, space, path, seed: int = 0):
    """An untrained reward model over an ItemSpace (its codes, video ids and codebook
    fingerprint, as the pipeline's reward stage tags one), saved to `path`; -> path."""
    rm = build_reward_model(cfg, space.codes, space.vocab_sizes)
    torch.manual_seed(seed)
    with torch.no_grad():  # seed-dependent weights, so two seeds rank differently
        for p in rm.parameters():
            p.add_(0.5 * torch.randn_like(p))
    rm.item_ids, rm.codebook_fingerprint = space.item_ids, space.fingerprint
    return save_reward_model(path, rm, cfg)
