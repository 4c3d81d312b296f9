"""Plots a user would rather look at than read, from runs already made (nothing is trained).

    python -m bench.plots --run runs/demo --out docs/img \\
        [--generation runs/generation.json] [--scaling runs/scaling/scaling.json]

From a demo run folder (`make demo`, `onerec demo --out DIR`):
- training-curves.png: loss, learning rate, samples/s and MFU against step, one line per
  cycle, from the history.json each pretrain step left in its model artifact;
- align-curves.png: reward, legality, KL and clip fraction against round, the same way;
- codebook.png: code utilisation per level and items per semantic ID of the production
  codebook (the run page's chart, `onerec.run_pages.codebook_png`);
- ab-arms.png: the A/B arms' per-user mean reward with 95% intervals and the difference's
  (the demo's report.json and ab/feedback.parquet).
From a `bench.generation --json` file: generation-latency.png (p50 latency at batch 1 and
users/s at batch 64 against the beam width, one line per path: textbook, reference, fast,
ONNX). From a `bench.scaling --json` file: scaling.png (the same chart as docs/scaling.png).

A plot whose input is missing is skipped with a line saying why, never an error.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from onerec import plots, run_pages
from onerec.io import atomic_write_bytes

GENERATION_PATHS = ("textbook", "reference", "fast", "fast-1t", "onnx", "onnx-1t")


def histories(run: Path, stage: str) -> dict[str, list[dict[str, Any]]]:
    """'cycle i' -> the history of `stage`'s model artifact in the i-th kfp.local run (the
    folders sort by their start time)."""
    out = {}
    runs = sorted(p for p in (run / "pipeline" / "kfp").glob("*") if p.is_dir())
    for i, folder in enumerate(runs, 1):
        h = run_pages.read_history(folder / stage / "model")
        if h:
            out[f"cycle {i}"] = h
    return out


def training_png(run: Path) -> bytes | None:
    return plots.line_panels(histories(run, "pretrain"), run_pages.PRETRAIN_SERIES,
                             title=f"pretraining, {run}")


def align_png(run: Path) -> bytes | None:
    return plots.line_panels(histories(run, "align"), run_pages.ALIGN_SERIES, xlabel="round",
                             title=f"alignment (ECPO), {run}")


def codebook_png(run: Path) -> bytes | None:
    folder = run / "pipeline" / "state" / "production" / "codebook"
    return run_pages.codebook_png(run_pages.codebook_stats(folder)) if folder.is_dir() else None


def ab_png(run: Path) -> bytes | None:
    import pandas as pd

    from onerec.ab import arm_intervals

    report, feedback = run / "report.json", run / "ab" / "feedback.parquet"
    if not (report.exists() and feedback.exists()):
        return None
    result = (json.loads(report.read_text()).get("ab") or {}).get("result")
    return run_pages.ab_png(arm_intervals(pd.read_parquet(feedback)), result)


def generation_png(summary: dict[str, Any], title: str = "bench.generation") -> bytes | None:
    """p50 ms at B=1 and users/s at B=64 against the beam width, from the summary
    `bench.generation` returns (and writes with --json): "<beam>/<path>" -> {p50, b64, ...}."""
    rows = [(int(k.split("/")[0]), k.split("/")[1], v) for k, v in summary.items()
            if k.count("/") == 1 and isinstance(v, dict) and k.split("/")[0].isdigit()]
    if not rows:
        return None
    fig, (a, b) = plots.figure(2, width=4.6, height=3.4)
    for i, path in enumerate(GENERATION_PATHS):  # one colour per path on both panels
        pts = sorted(((w, v) for w, p, v in rows if p == path), key=lambda t: t[0])
        for ax, key in ((a, "p50"), (b, "b64")):
            xy = [(w, v[key]) for w, v in pts if plots.finite(v.get(key))]
            if xy:
                ax.plot(*zip(*xy, strict=True), marker="o", label=path, color=f"C{i}")
    beams = sorted({r[0] for r in rows})
    for ax, ylabel, t in ((a, "p50 ms per user (batch 1)", "latency"),
                          (b, "users/s (batch 64; textbook: batch 1 only)", "throughput")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(beams, [str(w) for w in beams])
        ax.set(xlabel="beam width", ylabel=ylabel, title=t)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return plots.to_png(fig)


def scaling_png(path: Path) -> bytes | None:
    import tempfile

    from bench.scaling import plot

    if not path.exists():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        plot(json.loads(path.read_text()), Path(tmp) / "scaling.png")
        return (Path(tmp) / "scaling.png").read_bytes()


def main(argv: list[str] | None = None) -> dict[str, str]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=Path("runs/demo"), help="a demo run folder")
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    ap.add_argument("--generation", type=Path, default=None,
                    help="the JSON `python -m bench.generation --json FILE` wrote")
    ap.add_argument("--scaling", type=Path, default=None,
                    help="the JSON `python -m bench.scaling --json FILE` wrote")
    args = ap.parse_args(argv)
    makers: dict[str, Callable[[], bytes | None]] = {
        "training-curves.png": lambda: training_png(args.run),
        "align-curves.png": lambda: align_png(args.run),
        "codebook.png": lambda: codebook_png(args.run),
        "ab-arms.png": lambda: ab_png(args.run)}
    if args.generation is not None:
        makers["generation-latency.png"] = lambda: generation_png(
            json.loads(args.generation.read_text()) if args.generation.exists() else {},
            f"bench.generation ({args.generation.name})")
    if args.scaling is not None:
        makers["scaling.png"] = lambda: scaling_png(args.scaling)
    written = {}
    for name, make in makers.items():
        png = make()
        if png is None:
            print(f"{name}: skipped (its input is not in {args.run} or was not given)")
            continue
        written[name] = str(atomic_write_bytes(args.out / name, png))
        print(f"{name}: {written[name]}")
    return written


if __name__ == "__main__":
    main()
