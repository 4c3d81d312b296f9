"""The reward model's folder: what ECPO, RM selection and serving load.

A reward model is saved atomically as a folder of the checkpoint's three files
(`onerec.checkpoint.write_folder` / `read_folder`): state.pt (weights, the item-index ->
video-id map, the duration shaper), config.yaml (the Config it was trained with) and meta.json
(codebook and config fingerprints, the held-out metrics). A reward model made with another
codebook is refused, since its item indices would point at other videos; every failure is a
`RewardModelError` naming the folder.

A model version carries the reward model it was aligned with (`<version>/reward_model/`, so
serving re-ranks with RM selection: the behaviour model's winner). `copy_reward_model` copies
the three files and returns the entry the version's manifest records (codebook fingerprint,
each file's sha256); `check_copy` verifies a copy against that entry before serving loads it,
so a torn or swapped file is refused by name rather than loaded.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from onerec.checkpoint import check_codebook, read_folder, write_folder
from onerec.config import Config
from onerec.io import sha256_file
from onerec.reward.model import RewardModel
from onerec.reward.shaper import DurationShaper

RM_NAME = "reward_model"  # also the folder a model version carries it in
RM_FILES = ("state.pt", "config.yaml", "meta.json")  # what `save_reward_model` writes
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


def holds_reward_model(path: str | Path) -> bool:
    """Whether a folder holds a reward model at all (the pipeline's reward stage, when skipped,
    leaves its output folder empty)."""
    return any((Path(path) / name).exists() for name in RM_FILES)


def copy_reward_model(src: str | Path, dest: str | Path, codebook_fingerprint: str,
                      ) -> dict[str, Any]:
    """Copy a reward model into a model version (`dest`, inside the version's atomic write),
    refusing one that does not load or was made with another codebook; -> the manifest entry
    {dir, codebook_fingerprint, sha256: {file: digest}}."""
    src, dest = Path(src), Path(dest)
    model, _, _ = load_reward_model(src, codebook_fingerprint)  # a corrupt one never ships
    dest.mkdir(parents=True, exist_ok=True)
    for name in RM_FILES:
        shutil.copy2(src / name, dest / name)
    return {"dir": dest.name, "codebook_fingerprint": model.codebook_fingerprint,
            "sha256": {name: sha256_file(dest / name) for name in RM_FILES}}


def check_copy(version_dir: str | Path, entry: Any) -> Path:
    """The reward-model folder a version's manifest entry names, its files' sha256 checked;
    -> that folder. RewardModelError names the file that is missing or differs."""
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), dict) \
            or not isinstance(entry.get("dir"), str) or "/" in entry["dir"]:
        raise RewardModelError(f"{Path(version_dir) / 'manifest.json'}: field 'reward_model' "
                               f"is malformed ({entry!r:.200})")
    folder = Path(version_dir) / entry["dir"]
    for name in RM_FILES:
        path = folder / name
        if not path.is_file():
            raise RewardModelError(f"{path}: missing (named by the manifest's reward_model)")
        if sha256_file(path) != entry["sha256"].get(name):
            raise RewardModelError(f"{path}: sha256 does not match the manifest's reward_model "
                                   f"(a torn or swapped reward model)")
    return folder
