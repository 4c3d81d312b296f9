"""Codebook quality metrics, as a JSON-able dict and a PNG.

- utilisation per level: fraction of the K codes that at least one item uses at that level.
- code entropy per level (bits), and normalised by log2(K): 1.0 means perfectly even use.
- collision rate: 1 - (distinct L-code IDs / items), i.e. the fraction of items that need a
  disambiguation index > 0 (an ID shared by m items counts m - 1 collisions).
- items per semantic ID (L codes): mean and max.
- relative reconstruction error: mean over items of ||x - x_hat|| / ||x||, where x_hat is the
  sum of the item's L centroids (items with ||x|| = 0 are skipped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from onerec.io import atomic_path


def relative_error(x: np.ndarray, x_hat: np.ndarray) -> np.ndarray:
    """Per-item ||x - x_hat|| / ||x|| (NaN where ||x|| == 0)."""
    num = np.linalg.norm(x - x_hat, axis=1)
    den = np.linalg.norm(x, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def mean_relative_error(x: np.ndarray, x_hat: np.ndarray) -> float:
    err = relative_error(x, x_hat)
    return float(np.nanmean(err)) if np.isfinite(err).any() else 0.0


def code_metrics(codes: np.ndarray, codebook_size: int) -> dict[str, Any]:
    """Metrics that need only the codes (N, L): utilisation, entropy, collisions."""
    codes = np.asarray(codes)
    n, levels = codes.shape
    util, ent, ent_norm = [], [], []
    for level in range(levels):
        counts = np.bincount(codes[:, level], minlength=codebook_size)
        util.append(float((counts > 0).mean()))
        p = counts[counts > 0] / n
        h = float(-(p * np.log2(p)).sum())
        ent.append(h)
        ent_norm.append(h / float(np.log2(codebook_size)))
    _, per_id = np.unique(codes, axis=0, return_counts=True)
    return {
        "n_items": int(n),
        "levels": int(levels),
        "codebook_size": int(codebook_size),
        "utilisation": util,
        "entropy_bits": ent,
        "entropy_normalised": ent_norm,
        "n_semantic_ids": int(per_id.size),
        "collision_rate": float(1.0 - per_id.size / n),
        "items_per_id_mean": float(n / per_id.size),
        "items_per_id_max": int(per_id.max()),
    }


def codebook_metrics(codes: np.ndarray, codebook_size: int, x: np.ndarray,
                     x_hat: np.ndarray) -> dict[str, Any]:
    m = code_metrics(codes, codebook_size)
    m["reconstruction_error"] = mean_relative_error(x, x_hat)
    return m


def plot_metrics(metrics: dict[str, Any], path: str | Path, title: str = "codebook") -> Path:
    """Bar charts of utilisation and normalised entropy per level, with the scalars in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = np.arange(1, len(metrics["utilisation"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    axes[0].bar(levels, metrics["utilisation"], color="tab:blue")
    axes[0].set(title="code utilisation", xlabel="level", ylim=(0, 1.05), xticks=levels)
    axes[1].bar(levels, metrics["entropy_normalised"], color="tab:green")
    axes[1].set(title="entropy / log2 K", xlabel="level", ylim=(0, 1.05), xticks=levels)
    fig.suptitle(f"{title}: {metrics['n_items']} items, K={metrics['codebook_size']}, "
                 f"collisions {metrics['collision_rate']:.3f}, "
                 f"rel. error {metrics.get('reconstruction_error', float('nan')):.3f}",
                 fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
