"""Training the P-Score reward model, and `fit_p_score`, the one recipe every caller runs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from onerec.config import Config, RewardConfig
from onerec.evaluate import split_cut_ms
from onerec.items import ItemSpace
from onerec.reward import (
    TASKS,
    fit_p_score,
    loss_fn,
    predict,
    reward_metrics,
    train_reward_model,
)
from tests.reward.util import VOCAB, make_rm


def test_reward_model_loss_falls_on_tiny_data(tiny):
    cfg, _ds, item_ids, codes, _shaper, data = tiny
    rm = make_rm(cfg, codes, item_ids)
    idx = np.arange(len(data.labels))

    def full_loss() -> float:
        pred = predict(rm, data, idx)
        out = {"logits": torch.logit(torch.from_numpy(pred["probs"]).float(), eps=1e-6),
               "probs": torch.from_numpy(pred["probs"]).float(),
               "pscore": torch.from_numpy(pred["pscore"]).float()}
        return float(loss_fn(out, torch.from_numpy(data.labels), 1.0)["loss"])

    before = full_loss()
    res = train_reward_model(cfg, data, idx, rm)
    after = full_loss()
    assert res.steps == cfg.reward.steps
    assert after < before - 0.05, (before, after)
    metrics = reward_metrics(predict(rm, data, idx), data.labels[idx])
    assert set(metrics) == {*TASKS, "pscore"}
    assert metrics["click"]["auc"] > 0.55  # synthetic clicks follow taste: learnable
    assert abs(metrics["click"]["mean_pred"] - metrics["click"]["mean_obs"]) < 0.1


# -- one recipe: every reward setting reaches it -------------------------------------------------
def _behaviour(cfg: Config, ds, space, out) -> tuple:
    """What the recipe did under `cfg`: the weights it saved, its held-out metrics and
    calibration, and the log records of its run."""
    logged: list[dict] = []
    model, summary = fit_p_score(cfg, ds.events, space, split_cut_ms(ds.events, 1), out,
                                 log=logged.append)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    losses = [{k: v for k, v in r.items() if k == "step" or "loss" in k} for r in logged]
    return weights, summary["metrics"], summary["calibration"], summary["steps"], losses


# a changed value per RewardConfig field (the tiny preset's values stay valid)
CHANGES = {"d_model": 24, "n_heads": 4, "n_layers": 2, "hidden": 48, "max_seq_len": 3,
           "max_pos_seq_len": 3, "dropout": 0.3, "batch_size": 64, "lr": 1e-2,
           "weight_decay": 0.5, "steps": 9, "warmup_steps": 5, "grad_clip": 1e-3,
           "fusion_weight": 3.0, "duration_buckets": 2, "calibration_bins": 3, "log_every": 2,
           "seed": 7}


def test_every_reward_setting_changes_what_the_recipe_does(tiny, tmp_path):
    """`fit_p_score` is the one recipe of the reward stage and `onerec align`: each field of
    `cfg.reward` must reach it (no module sets a hyperparameter of its own)."""
    _, ds, item_ids, codes, _, _ = tiny
    assert set(CHANGES) == {f.name for f in dataclasses.fields(RewardConfig)}
    space = ItemSpace(item_ids=np.asarray(item_ids), codes=codes, vocab_sizes=VOCAB,
                      fingerprint="cb-test")
    base_cfg = Config.from_preset("tiny", ["reward.steps=8", "reward.log_every=4"])
    base = _behaviour(base_cfg, ds, space, tmp_path / "base")
    assert _same(_behaviour(base_cfg, ds, space, tmp_path / "again"), base)  # deterministic
    for name, value in CHANGES.items():
        cfg = Config.from_preset("tiny", ["reward.steps=8", "reward.log_every=4",
                                          f"reward.{name}={value}"])
        got = _behaviour(cfg, ds, space, tmp_path / name)
        assert not _same(got, base), f"reward.{name}={value} changed nothing"


def _same(a: tuple, b: tuple) -> bool:
    wa, wb = a[0], b[0]
    same_w = wa.keys() == wb.keys() and all(
        wa[k].shape == wb[k].shape and torch.equal(wa[k], wb[k]) for k in wa)
    return same_w and _plain(a[1:]) == _plain(b[1:])


def _plain(x):
    return json.dumps(x, sort_keys=True, default=str)
