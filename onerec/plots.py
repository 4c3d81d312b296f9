"""The few chart kinds the run pages and `bench.plots` draw, as PNG bytes.

Design choices:
- matplotlib with the Agg backend, selected here before pyplot is imported: pipeline steps,
  pods and CI have no display, and a chart is a file, never a window.
- Every function returns PNG bytes (or None where there is nothing to draw), never writes a
  file: callers decide where a picture goes (an HTML page as base64, a run folder, docs/img),
  and write it atomically (`onerec.io`).
- A series a history lacks (no MFU on some path, no clip fraction in GRPO) is not an error: the
  panel says "not recorded" and the caller lists what was missing in words.
"""

from __future__ import annotations

import io
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

DPI = 100


def to_png(fig: Any) -> bytes:
    """The figure as PNG bytes; the figure is closed (no pyplot state leaks between pages)."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue()


def finite(v: Any) -> bool:
    """A real number (numpy's included), not a bool, not NaN or infinite."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def series(history: Sequence[dict[str, Any]], key: str, x: str = "step"
           ) -> tuple[list[float], list[float]]:
    """(x, y) of the records that have a finite `key` (a history can mix record kinds: the
    trainer's evaluation records have no loss, its training records no recall)."""
    pts = [(float(r[x]), float(r[key])) for r in history
           if finite(r.get(key)) and finite(r.get(x))]
    return [p[0] for p in pts], [p[1] for p in pts]


def missing_series(history: Sequence[dict[str, Any]], keys: Sequence[str],
                   x: str = "step") -> list[str]:
    """The keys of `keys` no record of `history` has a finite value for."""
    return [k for k in keys if not series(history, k, x)[0]]


def line_panels(runs: Mapping[str, Sequence[dict[str, Any]]], panels: Sequence[tuple[str, str]],
                *, x: str = "step", xlabel: str = "step", title: str = "",
                logy: Sequence[str] = ()) -> bytes | None:
    """One small line chart per (key, label) against `x`, two panels a row, one line per run
    (label -> history; a legend when there are several); a key no run has gets an empty panel
    saying so. None when no key has a value."""
    if not panels or not any(series(h, k, x)[0] for h in runs.values() for k, _ in panels):
        return None
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (key, label) in zip(axes.flat, panels, strict=False):
        drawn = []
        for name, history in runs.items():
            xs, ys = series(history, key, x)
            if xs:
                ax.plot(xs, ys, marker="." if len(xs) < 40 else None, label=name or None)
                drawn += ys
        if not drawn:
            ax.text(0.5, 0.5, f"{label}: not recorded", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
        elif key in logy and min(drawn) > 0:
            ax.set_yscale("log")
        if drawn and len(runs) > 1:
            ax.legend(fontsize=7)
        ax.set(title=label, xlabel=xlabel)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9)
    return to_png(fig)


def bars(ax: Any, labels: Sequence[str], values: Sequence[float | None], *, title: str,
         ylabel: str = "", ylim: tuple[float, float] | None = None, color: str = "tab:blue",
         fmt: str = "{:.3f}") -> None:
    """Labelled bars on `ax`; a None or NaN value is drawn as a gap marked "n/a"."""
    xs = list(range(len(labels)))
    vals = [v if finite(v) else 0.0 for v in values]
    ax.bar(xs, vals, color=color)
    for xi, v in zip(xs, values, strict=True):
        ax.annotate(fmt.format(v) if finite(v) else "n/a", (xi, vals[xi]), ha="center",
                    va="bottom", fontsize=7, textcoords="offset points", xytext=(0, 2))
    ax.set_xticks(xs, list(labels), fontsize=8)
    ax.set(title=title, ylabel=ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)


def intervals(ax: Any, labels: Sequence[str], means: Sequence[float], lows: Sequence[float],
              highs: Sequence[float], *, title: str, xlabel: str, zero_line: bool = False
              ) -> None:
    """Points with their confidence intervals on `ax`, one row per label (e.g. the A/B arms)."""
    ys = list(range(len(labels)))[::-1]
    for y, m, lo, hi in zip(ys, means, lows, highs, strict=True):
        ax.errorbar([m], [y], xerr=[[m - lo], [hi - m]], fmt="o", capsize=4, color="tab:blue")
        ax.annotate(f"{m:.4f} [{lo:.4f}, {hi:.4f}]", (m, y), textcoords="offset points",
                    xytext=(0, 7), ha="center", fontsize=7)
    if zero_line:
        ax.axvline(0.0, color="gray", lw=0.8, ls="--")
    ax.set_yticks(ys, list(labels), fontsize=8)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.set(title=title, xlabel=xlabel)
    ax.grid(axis="x", alpha=0.3)


def figure(cols: int = 2, width: float = 4.2, height: float = 3.0) -> tuple[Any, Any]:
    """A row of `cols` axes for a caller that draws its own panels (then `to_png`)."""
    fig, axes = plt.subplots(1, cols, figsize=(width * cols, height), squeeze=False)
    return fig, list(axes.flat)
