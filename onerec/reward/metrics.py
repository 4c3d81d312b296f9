"""How good a reward model is on held-out impressions: per-task AUC and calibration.

ECPO optimises the P-Score, so a reward model that ranks well but is miscalibrated (or
calibrated on average but not per bin) steers alignment wrongly; OneRec (arXiv 2506.13695,
section 4.1) evaluates the Preference Score per task for the same reason. `predict` scores
impressions in eval mode; `reward_metrics` gives each task's AUC, ECE, mean predicted vs
observed and positives, and the fused P-Score's against "engaged"; `calibration_curves` gives
the reliability diagrams (the bins `ece` weighs) that the run pages draw.
"""

from __future__ import annotations

import numpy as np
import torch

from onerec.evaluate import auc
from onerec.reward.data import RewardData, impression_batch
from onerec.reward.model import RewardModel
from onerec.reward.shaper import ENGAGED_TASKS, TASKS


def ece(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """Expected calibration error: |mean label - mean prediction| per equal-width bin, weighted
    by the bin's share of predictions."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    which = np.minimum((probs * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(labels[sel].mean() - probs[sel].mean())
    return float(total)


@torch.no_grad()
def predict(model: RewardModel, data: RewardData, idx: np.ndarray,
            batch_size: int = 4096) -> dict[str, np.ndarray]:
    """Task probabilities (n, 6) and P-Scores (n,) of impressions idx, in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    probs, pscore = [], []
    for s in range(0, len(idx), batch_size):
        ctx, items, req, _ = impression_batch(data, idx[s:s + batch_size])
        memory, mask, urep = model.encode(ctx.to(device))
        out = model.score(memory, mask, urep, items.to(device), req.to(device))
        probs.append(out["probs"].cpu().numpy())
        pscore.append(out["pscore"].cpu().numpy())
    if not probs:
        return {"probs": np.zeros((0, len(TASKS))), "pscore": np.zeros(0)}
    return {"probs": np.concatenate(probs), "pscore": np.concatenate(pscore)}


def _engaged(labels: np.ndarray) -> np.ndarray:
    return labels[:, [TASKS.index(t) for t in ENGAGED_TASKS]].max(-1)


def reward_metrics(pred: dict[str, np.ndarray], labels: np.ndarray,
                   bins: int = 10) -> dict[str, dict[str, float]]:
    """Predictions (`predict`) and their labels -> per task: AUC, ECE, mean predicted vs
    observed, positives; and the same of the fused P-Score against "engaged". The watch task's
    AUC and ECE use its percentile label > 0.5."""
    out: dict[str, dict[str, float]] = {}
    for k, task in enumerate(TASKS):
        y, p = labels[:, k], pred["probs"][:, k]
        y_bin = (y > 0.5).astype(np.float64)
        out[task] = {"auc": auc(p, y_bin), "ece": ece(p, y, bins),
                     "mean_pred": float(p.mean()) if len(p) else float("nan"),
                     "mean_obs": float(y.mean()) if len(y) else float("nan"),
                     "positives": float(y_bin.sum())}
    engaged = _engaged(labels)
    out["pscore"] = {"auc": auc(pred["pscore"], engaged), "ece": ece(pred["pscore"], engaged, bins),
                     "mean_pred": float(pred["pscore"].mean()) if len(engaged) else float("nan"),
                     "mean_obs": float(engaged.mean()) if len(engaged) else float("nan"),
                     "positives": float(engaged.sum())}
    return out


def calibration_bins(probs: np.ndarray, labels: np.ndarray, bins: int
                     ) -> dict[str, list[float | None]]:
    """Per equal-width bin of the predictions (the bins `ece` weighs): mean predicted, mean
    observed and count; an empty bin has count 0 and no means. A reliability diagram's data."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    which = np.minimum((probs * bins).astype(np.int64), bins - 1)
    out: dict[str, list[float | None]] = {"pred": [], "obs": [], "count": []}
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        out["pred"].append(float(probs[sel].mean()) if n else None)
        out["obs"].append(float(labels[sel].mean()) if n else None)
        out["count"].append(n)
    return out


def calibration_curves(pred: dict[str, np.ndarray], labels: np.ndarray,
                       bins: int = 10) -> dict[str, dict[str, list[float | None]]]:
    """`calibration_bins` of every task and of the P-Score (against "engaged")."""
    out = {task: calibration_bins(pred["probs"][:, k], labels[:, k], bins)
           for k, task in enumerate(TASKS)}
    out["pscore"] = calibration_bins(pred["pscore"], _engaged(labels), bins)
    return out
