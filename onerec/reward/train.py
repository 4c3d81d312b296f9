"""Training the P-Score model, and `fit_p_score`: the one recipe that makes a reward model.

`train_reward_model` is the loop: AdamW on shuffled impressions, warmup then a constant
learning rate, the per-task and fusion losses of `onerec.reward.model.loss_fn`, an optional
time budget. `fit_p_score` is the whole recipe the pipeline's reward stage
(`onerec.stages.train_reward`), `onerec align` (`onerec.alignment`) and `bench.alignment` all
run, so the three cannot drift apart: fit the duration shaper on the days before the cut
(OneRec-V2, arXiv 2508.20900), build the impressions with their contexts, train on those
before the cut, evaluate on the held-out days after it (per-task AUC and ECE, calibration
curves; OneRec, arXiv 2506.13695, section 4.1) and save the folder. Every `cfg.reward` field
reaches it; no caller sets a hyperparameter of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from onerec.config import Config
from onerec.determinism import deterministic_training
from onerec.items import ItemSpace
from onerec.reward.data import RewardData, impression_batch, reward_data
from onerec.reward.io import save_reward_model
from onerec.reward.metrics import calibration_curves, predict, reward_metrics
from onerec.reward.model import RewardModel, build_reward_model, loss_fn
from onerec.reward.shaper import TASKS, DurationShaper


@dataclass
class RewardTrainResult:
    """What a training run did: steps taken, the last loss, wall time, the logged records."""

    steps: int
    final_loss: float
    wall_s: float
    history: list[dict[str, float]] = field(default_factory=list)


@deterministic_training
def train_reward_model(cfg: Config, data: RewardData, train_idx: np.ndarray,
                       model: RewardModel, *, time_budget_s: float | None = None,
                       log: Callable[[dict[str, Any]], None] | None = None,
                       ) -> RewardTrainResult:
    """AdamW on shuffled impressions (epochs over train_idx), warmup then constant LR."""
    rc = cfg.reward
    if len(train_idx) == 0:
        raise ValueError("no training impressions for the reward model")
    device = next(model.parameters()).device
    opt = torch.optim.AdamW(model.parameters(), lr=rc.lr, weight_decay=rc.weight_decay)
    rng = np.random.default_rng(rc.seed)
    order, pos = rng.permutation(train_idx), 0
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    loss_val = float("nan")
    model.train()
    step = 0
    while step < rc.steps:
        if pos >= len(order):
            order, pos = rng.permutation(train_idx), 0
        idx = order[pos:pos + rc.batch_size]
        pos += len(idx)
        ctx, items, req, labels = impression_batch(data, idx)
        for g in opt.param_groups:
            g["lr"] = rc.lr * min(1.0, (step + 1) / max(1, rc.warmup_steps))
        memory, mask, urep = model.encode(ctx.to(device))
        out = model.score(memory, mask, urep, items.to(device), req.to(device))
        losses = loss_fn(out, labels.to(device), rc.fusion_weight)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), rc.grad_clip)
        opt.step()
        step += 1
        loss_val = float(losses["loss"].detach())
        if step % rc.log_every == 0 or step == rc.steps:
            rec = {"step": step, "loss": loss_val, "fusion_loss": float(losses["fusion_loss"]),
                   "grad_norm": float(gn), "wall_s": time.perf_counter() - t0,
                   **{f"loss_{t}": float(v) for t, v in zip(TASKS, losses["task_losses"],
                                                             strict=True)}}
            history.append(rec)
            if log is not None:
                log(rec)
        if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
            break
    model.eval()
    return RewardTrainResult(steps=step, final_loss=loss_val, wall_s=time.perf_counter() - t0,
                             history=history)


def fit_p_score(cfg: Config, events: pd.DataFrame, space: ItemSpace, cut_ms: int,
                out: str | Path, *,
                history: pd.DataFrame | None = None, n_user_buckets: int = 1,
                time_budget_s: float | None = None,
                log: Callable[[dict[str, Any]], None] | None = None,
                ) -> tuple[RewardModel, dict[str, Any]]:
    """The one recipe (the pipeline's reward stage and `onerec align` both call it): fit the
    duration shaper and train the P-Score model on the impressions before `cut_ms`, evaluate it
    (per-task AUC and ECE, calibration curves at `reward.calibration_bins`) on those after, and
    save it to `out`. Returns the model and its summary."""
    before = events[events["time_ms"] < cut_ms]
    shaper = DurationShaper.fit(before["duration_ms"].to_numpy(),
                                before["play_time_ms"].to_numpy(), cfg.reward.duration_buckets)
    data = reward_data(events, space.index, cfg, shaper, history=history,
                       n_user_buckets=n_user_buckets)
    train_idx, test_idx = data.split(cut_ms)
    model = build_reward_model(cfg, space.codes, space.vocab_sizes, n_user_buckets)
    model.item_ids, model.codebook_fingerprint = space.item_ids, space.fingerprint
    res = train_reward_model(cfg, data, train_idx, model, time_budget_s=time_budget_s, log=log)
    metrics: dict[str, Any] = {}
    calibration: dict[str, Any] = {}
    if len(test_idx):  # one pass over the held-out impressions for both
        pred, labels = predict(model, data, test_idx), data.labels[test_idx]
        metrics = reward_metrics(pred, labels, cfg.reward.calibration_bins)
        calibration = calibration_curves(pred, labels, cfg.reward.calibration_bins)
    save_reward_model(out, model, cfg, shaper, metrics)
    return model, {"steps": res.steps, "final_loss": res.final_loss,
                   "train_s": round(res.wall_s, 3), "n_train_impressions": len(train_idx),
                   "n_heldout_impressions": len(test_idx), "metrics": metrics,
                   "calibration": calibration}
