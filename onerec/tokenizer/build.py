"""Fit a codebook from item embeddings, and refresh it as new items arrive.

Refresh policy (continuous training):
1. New items (ids not in the codebook) are encoded with the current centroids, nearest code
   per level; existing items keep their IDs byte for byte.
2. Drift is measured on the new items: `drift = err_new / err_fit - 1`, where err is the mean
   relative reconstruction error ||x - x_hat|| / ||x|| and err_fit the one recorded at fit
   time. Second signal, crowding: the number of level-1 codes the new items use, divided by the
   number expected if they followed the fitted level-1 distribution p (sum_k 1 - (1 - p_k)^n).
   Items unlike anything fitted pile into a few codes (measured on KuaiRand: ratio 0.87 for a
   real day of uploads, 0.15 for the same videos with statistics x 1e6, whose reconstruction
   drift is only +0.19). The ratio is only trusted when at least min(10, K/2) codes are expected.
3. If drift > `tokenizer.refit_drift_threshold`, or the utilisation ratio is below
   `tokenizer.refit_utilisation_ratio`, the whole catalogue is refitted: new embedder,
   new centroids, version + 1, `parent_fingerprint` = the old fingerprint, and a mapping report
   old ID -> new ID for every item present in both. Otherwise the extended codebook keeps the
   version and bumps the revision.
A model trained on one codebook refuses any other (`Codebook.check_fingerprint`), so a refit
means retraining; a refresh without refit is a new fingerprint too, but every old ID still
means the same item, which the next streaming-training step picks up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onerec.config import TokenizerConfig
from onerec.tokenizer import rq_kmeans
from onerec.tokenizer.codebook import Codebook
from onerec.tokenizer.metrics import code_metrics, codebook_metrics, mean_relative_error


def tokenizer_settings(cfg: TokenizerConfig) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(cfg)


def fit_codebook(x: np.ndarray, item_ids: np.ndarray, cfg: TokenizerConfig, *,
                 config_fingerprint: str = "", version: int = 1,
                 parent_fingerprint: str | None = None,
                 on_level: Callable[[int], None] | None = None) -> Codebook:
    """RQ-Kmeans over x (N, d) for items `item_ids` (N,) -> Codebook with metrics."""
    item_ids = np.asarray(item_ids, dtype=np.int64)
    x = rq_kmeans.check_embeddings(x, cfg.codebook_size)
    if item_ids.shape != (x.shape[0],):
        raise rq_kmeans.TokenizerError(f"{item_ids.size} item ids for {x.shape[0]} embeddings")
    t0 = time.perf_counter()
    centroids, codes = rq_kmeans.fit(
        x, levels=cfg.levels, codebook_size=cfg.codebook_size, iters=cfg.kmeans_iters,
        seed=cfg.seed, balanced=cfg.balanced, slack=cfg.balance_slack,
        balance_iters=cfg.balance_iters, on_level=on_level)
    fit_s = time.perf_counter() - t0
    metrics = codebook_metrics(codes, cfg.codebook_size, x, rq_kmeans.decode(codes, centroids))
    metrics["fit_seconds"] = round(fit_s, 3)
    return Codebook.from_codes(centroids, item_ids, codes, version=version,
                               settings=tokenizer_settings(cfg),
                               config_fingerprint=config_fingerprint, metrics=metrics,
                               parent_fingerprint=parent_fingerprint)


@dataclass
class Drift:
    n_new: int
    reconstruction_error_new: float
    reconstruction_error_fit: float
    drift: float  # err_new / err_fit - 1
    threshold: float
    utilisation_new: list[float]
    utilisation_ratio: float = 1.0  # level-1 codes used by new items / expected (1: as fitted)
    min_utilisation_ratio: float = 0.0
    expected_codes: float = 0.0  # level-1 codes the new items are expected to use
    min_expected_codes: float = 10.0  # the ratio is trusted from min(10, K/2) expected codes

    @property
    def crowded(self) -> bool:
        return (self.expected_codes >= self.min_expected_codes
                and self.utilisation_ratio < self.min_utilisation_ratio)

    @property
    def refit(self) -> bool:
        return self.n_new > 0 and (self.drift > self.threshold or self.crowded)

    def to_dict(self) -> dict[str, Any]:
        return {"n_new": self.n_new, "reconstruction_error_new": self.reconstruction_error_new,
                "reconstruction_error_fit": self.reconstruction_error_fit, "drift": self.drift,
                "threshold": self.threshold, "utilisation_new": self.utilisation_new,
                "utilisation_ratio": self.utilisation_ratio,
                "min_utilisation_ratio": self.min_utilisation_ratio,
                "expected_codes": self.expected_codes, "crowded": self.crowded,
                "refit": self.refit}


def expected_codes_used(fitted_codes: np.ndarray, k: int, n: int) -> float:
    """Expected number of distinct codes among n draws from the fitted code distribution."""
    p = np.bincount(fitted_codes, minlength=k) / max(fitted_codes.size, 1)
    return float((1.0 - (1.0 - p) ** n).sum())


def measure_drift(codebook: Codebook, x_new: np.ndarray, threshold: float,
                  min_utilisation_ratio: float = 0.0) -> Drift:
    if len(x_new) == 0:
        return Drift(0, 0.0, float(codebook.metrics.get("reconstruction_error", 0.0)), 0.0,
                     threshold, [0.0] * codebook.levels, 1.0, min_utilisation_ratio, 0.0)
    codes = codebook.encode(x_new)
    err_new = mean_relative_error(x_new, codebook.decode(codes))
    err_fit = float(codebook.metrics.get("reconstruction_error", 0.0))
    drift = err_new / err_fit - 1.0 if err_fit > 0 else (0.0 if err_new == 0 else float("inf"))
    k = codebook.codebook_size
    util = code_metrics(codes, k)["utilisation"]
    expected = expected_codes_used(codebook.codes[:, 0], k, len(x_new))
    ratio = float(np.unique(codes[:, 0]).size / expected) if expected > 0 else 1.0
    return Drift(len(x_new), err_new, err_fit, float(drift), threshold, util, ratio,
                 min_utilisation_ratio, expected, min(10.0, k / 2))


def mapping_report(old: Codebook, new: Codebook) -> dict[str, Any]:
    """Old -> new semantic ID for every item in both; counts of kept, added, removed items."""
    common = np.intersect1d(old.item_ids, new.item_ids)
    o = old.semantic_ids_of(common)
    n = new.semantic_ids_of(common)
    return {
        "old_version": old.version, "new_version": new.version,
        "old_fingerprint": old.fingerprint, "new_fingerprint": new.fingerprint,
        "n_common": int(common.size),
        "n_added": int(np.setdiff1d(new.item_ids, old.item_ids).size),
        "n_removed": int(np.setdiff1d(old.item_ids, new.item_ids).size),
        "n_first_code_changed": int((o[:, 0] != n[:, 0]).sum()),
        "mapping": {str(int(i)): [a.tolist(), b.tolist()]
                    for i, a, b in zip(common.tolist(), o, n, strict=True)},
    }


@dataclass
class RefreshResult:
    codebook: Codebook
    drift: Drift
    refit: bool
    mapping: dict[str, Any] | None = None
    new_item_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def refresh(codebook: Codebook, new_ids: np.ndarray, x_new: np.ndarray, cfg: TokenizerConfig,
            refit_data: Callable[[], tuple[np.ndarray, np.ndarray]], *,
            config_fingerprint: str = "") -> RefreshResult:
    """Encode new items into `codebook`, or refit when drift says so.

    new_ids (n,), x_new (n, d): the new items and their embeddings in the codebook's space.
    refit_data(): called only on a refit; returns (item_ids, x) for the whole current catalogue
    (re-embedded from scratch; the space may change, since the centroids do).
    """
    new_ids = np.asarray(new_ids, dtype=np.int64)
    keep = ~np.isin(new_ids, codebook.item_ids)
    new_ids, x_new = new_ids[keep], np.asarray(x_new)[keep]
    if len(x_new):
        x_new = rq_kmeans.check_embeddings(x_new)
    drift = measure_drift(codebook, x_new, cfg.refit_drift_threshold,
                          cfg.refit_utilisation_ratio)
    if drift.refit:
        ids, x = refit_data()
        new = fit_codebook(x, ids, cfg, config_fingerprint=config_fingerprint,
                           version=codebook.version + 1, parent_fingerprint=codebook.fingerprint)
        new.metrics["drift_at_refit"] = drift.to_dict()
        return RefreshResult(new, drift, True, mapping_report(codebook, new), new_ids)
    if not len(x_new):
        return RefreshResult(codebook, drift, False, None, new_ids)
    metrics = dict(codebook.metrics)
    metrics["last_refresh"] = drift.to_dict()
    ext = codebook.extended(new_ids, codebook.encode(x_new), metrics=metrics)
    ext.metrics["collision_rate_after_refresh"] = code_metrics(
        ext.codes, ext.codebook_size)["collision_rate"]
    return RefreshResult(ext, drift, False, None, new_ids)
