"""The reward model's folder: what ECPO, RM selection and serving load.

A reward model is saved atomically as a folder of the checkpoint's three files
(`onerec.checkpoint.write_folder` / `read_folder`): state.pt (weights, the item-index ->
video-id map, the duration shaper), config.yaml (the Config it was trained with) and meta.json
(codebook and config fingerprints, the held-out metrics). A reward model made with another
codebook is refused, since its item indices would point at other videos; every failure is a
`RewardModelError` naming the folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from onerec.checkpoint import check_codebook, read_folder, write_folder
from onerec.config import Config
from onerec.reward.model import RewardModel
from onerec.reward.shaper import DurationShaper

RM_NAME = "reward_model"
_WHAT = "reward model"  # how errors name the folder


class RewardModelError(ValueError):
    """A reward-model folder is missing, corrupt, or made with another codebook."""


def save_reward_model(path: str | Path, model: RewardModel, cfg: Config,
                      shaper: DurationShaper | None = None,
                      metrics: dict[str, Any] | None = None) -> Path:
    """Write the folder atomically: state.pt, config.yaml, meta.json."""
    state = {"model": model.state_dict(), "vocab_sizes": model.vocab_sizes,
             "n_user_buckets": model.n_user_buckets, "item_ids": model.item_ids,
             "shaper": shaper.state() if shaper is not None else None}
    meta = {"codebook_fingerprint": model.codebook_fingerprint,
            "config_fingerprint": cfg.fingerprint(), "metrics": metrics or {}}
    return write_folder(path, state, cfg, meta, json_default=_nan_safe)


def _nan_safe(v: Any) -> Any:
    return float(v) if isinstance(v, (np.floating, float)) and not math.isnan(v) else None


def load_reward_model(path: str | Path, codebook_fingerprint: str | None = None,
                      ) -> tuple[RewardModel, Config, DurationShaper | None]:
    """Read a reward-model folder; refuse one made with another codebook."""
    path = Path(path)
    meta, state, cfg = read_folder(path, _WHAT, RewardModelError)
    check_codebook(path, meta, codebook_fingerprint, _WHAT, RewardModelError)
    codes = state["model"]["item_codes"]
    model = RewardModel(cfg.reward, item_codes=codes, vocab_sizes=state["vocab_sizes"],
                        n_user_buckets=state["n_user_buckets"],
                        max_seq_len=cfg.reward.max_seq_len, max_pos_len=cfg.reward.max_pos_seq_len)
    model.load_state_dict(state["model"])
    model.item_ids = np.asarray(state["item_ids"], dtype=np.int64)
    model.codebook_fingerprint = meta["codebook_fingerprint"]
    model.eval()
    shaper = DurationShaper.from_state(state["shaper"]) if state.get("shaper") else None
    return model, cfg, shaper
