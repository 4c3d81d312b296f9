"""Two alignment findings of the OneRec report as curves over rounds (issue #18, item 2).

    python -m bench.align_curves --which format|stability|both [--checkpoint CKPT --codebook CB]
        [--reward-model RM] [--rounds N] [--stability-rounds N] [--search]

1. format: the format reward with `align.format_select: topk` (the k most probable legal
   samples keep the positive advantage) against `random` (the paper's rule), same pretrained
   start, same seed. Top-k rewards what the policy already prefers, squeezing probability onto
   it; the report saw the legality of all samples rise, then decay, while that of the chosen
   ones reaches 100%. The format reward dominates (`FORMAT_DEFAULTS`: a large format weight,
   no KL or next-token anchor), so the curve shows what it does on its own.
2. stability: plain GRPO (`align.early_clip: false`) against ECPO in a setting meant to make
   GRPO's negative-advantage gradients large (`STABILITY_DEFAULTS`: a sampler lagging the
   trainer, a higher learning rate); `--search` first runs the short grid `SEARCH_GRID`
   (learning rate, temperature, group size, sampler lag) and tables every setting, the ones
   that showed nothing included.

Sampling is unconstrained (`onerec.ecpo.sample_group`): a sample is legal when its semantic ID
names a real video (`ItemTrie.walk`), so the format reward has something to act on. Tables
print every 10% of the rounds; JSON goes to `--json` (runs/), plots to docs/img/
(align-format-select.png, align-stability.png). The pretrained generator and the reward model
come from `bench.alignment`'s helpers (`pretrained`, `prepare`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.alignment import ROOT, align_variant, prepare, pretrained
from bench.runtime import reexec_with_tuned_env

# the format reward on its own terms: it dominates the P-Score advantage, nothing pulls back
FORMAT_DEFAULTS = ["align.format_weight=10", "align.kl_weight=0", "align.ntp_loss_weight=0",
                   "align.lr=1e-4", "align.format_k=2", "align.group_size=8"]
# where GRPO's unbounded negative-advantage ratios should bite: a lagging sampler, a high lr
STABILITY_DEFAULTS = ["align.lr=1e-3", "align.sync_every=8", "align.ppo_epochs=4",
                      "align.kl_weight=0", "align.ntp_loss_weight=0"]
# the grid `--search` tries (each for --search-rounds, GRPO and ECPO; KL and NTP weights 0):
# name -> align overrides. The global grad-norm clip (align.grad_clip 1.0) bounds every update
# whatever the ratios, so half the grid turns it off (1e6) to let GRPO's unbounded
# negative-advantage terms through, which is what ECPO's per-sample bound is for
NO_CLIP = 1e6
SEARCH_GRID: dict[str, dict[str, Any]] = {
    "lr 1e-5, on-policy": {"lr": 1e-5},
    "lr 1e-4, sync 8": {"lr": 1e-4, "sync_every": 8},
    "lr 1e-3, sync 8": {"lr": 1e-3, "sync_every": 8},
    "lr 1e-4, sync 8, no grad clip": {"lr": 1e-4, "sync_every": 8, "grad_clip": NO_CLIP},
    "lr 1e-3, sync 8, no grad clip": {"lr": 1e-3, "sync_every": 8, "grad_clip": NO_CLIP},
    "lr 1e-4, sync 8, T 0.5, no grad clip": {"lr": 1e-4, "sync_every": 8, "temperature": 0.5,
                                             "grad_clip": NO_CLIP},
    "lr 1e-4, sync 8, G 32, no grad clip": {"lr": 1e-4, "sync_every": 8, "group_size": 32,
                                            "grad_clip": NO_CLIP},
    "lr 1e-4, sync 16, 4 epochs, no grad clip": {"lr": 1e-4, "sync_every": 16,
                                                 "ppo_epochs": 4, "grad_clip": NO_CLIP},
}
FORMAT_PANELS = [("legality", "legality of all samples"),
                 ("legality_chosen", "rewarded slots a chosen legal sample fills"),
                 ("legality_top_k", "legality of the k most probable samples"),
                 ("distinct", "distinct videos per group / G"), ("kl", "KL to pretrained"),
                 ("reward", "reward (P-Score, legal samples)")]
STABILITY_PANELS = [("grad_norm", "grad norm (before clipping)"), ("kl", "KL to pretrained"),
                    ("legality", "legality of the samples"), ("reward", "reward (legal samples)"),
                    ("early_clip_frac", "early-clip fraction"), ("ratio_max", "max ratio")]
KL_SPIKE = 50.0  # a round whose KL to the reference exceeds this counts as a spike
# the series each table shows (history key -> column)
FORMAT_COLS = {"legality": "legality (all)", "legality_chosen": "chosen filled",
               "legality_top_k": "legality top-k", "distinct": "distinct", "kl": "KL"}
STABILITY_COLS = {"grad_norm": "grad norm", "kl": "KL", "legality": "legality",
                  "reward": "reward", "early_clip_frac": "early clip", "ratio_max": "max ratio"}


def _quiet(rec: dict) -> None:
    """The per-round log: one short line every `align.log_every` rounds."""
    keep = ("step", "legality", "legality_top_k", "reward", "kl", "grad_norm",
            "early_clip_frac", "wall_s")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()
                      if k in keep}), flush=True)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["align.lr=1e-3", ...] -> {"lr": 0.001, ...}: read and validated by Config itself."""
    from onerec.config import Config

    keys = [it.partition("=")[0] for it in items]
    bad = [k for k in keys if not k.startswith("align.")]
    if bad:
        raise SystemExit(f"only align.* overrides are allowed here, got {', '.join(bad)}")
    align = Config.from_preset("small", items).align
    return {k.removeprefix("align."): getattr(align, k.removeprefix("align.")) for k in keys}


def sparse_rows(histories: dict[str, list[dict]], cols: dict[str, str], every: float = 0.1,
                ) -> tuple[list[str], list[list[str]]]:
    """Rows at round 1 and every `every` of the rounds: round, then each run's `cols`."""
    n = max(len(h) for h in histories.values())
    step = max(1, round(n * every))
    picks = sorted({1, *range(step, n + 1, step), n})
    header = ["round"] + [f"{name}: {label}" for name in histories for label in cols.values()]
    rows = []
    for r in picks:
        row = [str(r)]
        for h in histories.values():
            rec = h[r - 1] if r <= len(h) else {}
            row += [f"{rec[k]:.3f}" if k in rec else "-" for k in cols]
        rows.append(row)
    return header, rows


def summary(h: list[dict]) -> dict[str, float]:
    """One run in a few numbers: first/last fifth means, maxima, the final KL."""
    import numpy as np

    k = max(1, len(h) // 5)

    def m(key: str, part: list[dict]) -> float:
        return float(np.mean([r[key] for r in part]))

    return {"rounds": len(h), "grad_norm_mean": m("grad_norm", h),
            "grad_norm_max": max(r["grad_norm"] for r in h),
            "legality_first": m("legality", h[:k]), "legality_last": m("legality", h[-k:]),
            "legality_max": max(r["legality"] for r in h),
            "legality_min": min(r["legality"] for r in h),
            "reward_first": m("reward", h[:k]), "reward_last": m("reward", h[-k:]),
            "kl_last": h[-1]["kl"], "kl_max": max(r["kl"] for r in h),
            "kl_median": float(np.median([r["kl"] for r in h])),
            "kl_spikes": sum(r["kl"] > KL_SPIKE for r in h),
            "early_clip": m("early_clip_frac", h), "ratio_max": max(r["ratio_max"] for r in h)}


SUMMARY_COLS = ["grad norm mean / max", f"KL median / max (rounds > {KL_SPIKE:g})",
                "legality first -> last", "reward first -> last", "early clip", "max ratio"]


def summary_cells(s: dict[str, float]) -> list[str]:
    """A `summary` as the cells of SUMMARY_COLS."""
    return [f"{s['grad_norm_mean']:.2f} / {s['grad_norm_max']:.2f}",
            f"{s['kl_median']:.2f} / {s['kl_max']:.1f} ({s['kl_spikes']})",
            f"{s['legality_first']:.3f} -> {s['legality_last']:.3f}",
            f"{s['reward_first']:.3f} -> {s['reward_last']:.3f}", f"{s['early_clip']:.3f}",
            f"{s['ratio_max']:.2f}"]


def plot(histories: dict[str, list[dict]], panels: list[tuple[str, str]], title: str,
         path: Path, logy: tuple[str, ...] = ()) -> None:
    from onerec.io import atomic_write_bytes
    from onerec.plots import line_panels

    png = line_panels(histories, panels, xlabel="round", title=textwrap.fill(title, 110),
                      logy=logy)
    if png is not None:
        atomic_write_bytes(path, png)
        print(f"wrote {path}")


def plot_format(hs: dict[str, list[dict]], overrides: list[str], img: Path) -> None:
    plot(hs, FORMAT_PANELS, f"format reward: top-k vs random-k ({' '.join(overrides)})",
         img / "align-format-select.png")


def plot_stability(hs: dict[str, list[dict]], overrides: list[str], img: Path) -> None:
    plot(hs, STABILITY_PANELS, f"GRPO vs ECPO ({' '.join(overrides)})",
         img / "align-stability.png", logy=("kl", "ratio_max"))


def replot(path: Path, img: Path) -> None:
    """Redraw the plots of a JSON this bench wrote (no training)."""
    d = json.loads(path.read_text())
    if "format" in d:
        plot_format(d["format"]["history"], d["format"]["overrides"], img)
    if "stability" in d:
        plot_stability(d["stability"]["history"], d["stability"]["overrides"], img)


def run_pair(p: Any, args: argparse.Namespace, ckpt: Path, base: dict[str, Any],
             variants: dict[str, dict[str, Any]], rounds: int, tag: str) -> dict[str, list]:
    """Each variant from the same pretrained start and seed: name -> history."""
    out: dict[str, list] = {}
    for name, extra in variants.items():
        slug = f"{tag}-{name}".lower().replace(" ", "-").replace(",", "")
        _, res = align_variant(p, f"{tag}: {name}", {**base, **extra}, Path(args.out) / slug,
                               rounds, ckpt, log=_quiet)
        out[name] = res.history
        print(f"{tag} {name}: {res.steps} rounds in {res.wall_s / 60:.1f} min")
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--which", choices=("format", "stability", "both"), default="both")
    ap.add_argument("--checkpoint", default=None, help="pretrained checkpoint folder")
    ap.add_argument("--codebook", default=None, help="its codebook folder")
    ap.add_argument("--reward-model", default=None,
                    help="reuse this reward-model folder (else trained for --rm-minutes)")
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "kuairand-pure"))
    ap.add_argument("--pretrain-minutes", type=float, default=2.5,
                    help="budget of the short pretraining when no --checkpoint is given")
    ap.add_argument("--rm-minutes", type=float, default=1.0, help="reward-model training budget")
    ap.add_argument("--rounds", type=int, default=150, help="rounds of each format run")
    ap.add_argument("--stability-rounds", type=int, default=60, help="rounds of each GRPO/ECPO run")
    ap.add_argument("--search", action="store_true",
                    help="also run SEARCH_GRID (GRPO and ECPO, --search-rounds each)")
    ap.add_argument("--search-rounds", type=int, default=20)
    ap.add_argument("--format-set", action="append", default=None,
                    help=f"align.* override of the format runs (repeatable; default "
                         f"{' '.join(FORMAT_DEFAULTS)})")
    ap.add_argument("--stability-set", action="append", default=None,
                    help=f"align.* override of the stability runs (repeatable; default "
                         f"{' '.join(STABILITY_DEFAULTS)})")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--out", default="runs/align-curves")
    ap.add_argument("--json", default="runs/align-curves/curves.json")
    ap.add_argument("--img-dir", default=str(ROOT / "docs" / "img"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--replot", default=None, help="only redraw the plots of this JSON")
    args = ap.parse_args(argv)
    if args.replot:
        replot(Path(args.replot), Path(args.img_dir))
        return {}
    reexec_with_tuned_env("bench.align_curves", argv)
    if bool(args.checkpoint) != bool(args.codebook):
        ap.error("--checkpoint and --codebook go together")

    import torch
    from rich.console import Console

    from bench.report import print_table
    from onerec.config import Config

    torch.set_num_threads(args.threads)
    console = Console(width=240)  # the tables are wide; the Markdown copy follows each
    print(f"load average at start: {os.getloadavg()}")
    t_start = time.perf_counter()
    cfg = Config.from_preset(args.preset)
    ckpt, cb_dir = pretrained(args, cfg)
    p = prepare(args, cfg, ckpt, cb_dir, reward_model=args.reward_model)
    img = Path(args.img_dir)
    result: dict[str, Any] = {}

    if args.which in ("format", "both"):
        fset = args.format_set if args.format_set is not None else FORMAT_DEFAULTS
        base = parse_overrides(fset)
        hs = run_pair(p, args, ckpt, base, {"top-k": {"format_select": "topk"},
                                            "random-k": {"format_select": "random"}},
                      args.rounds, "format")
        header, rows = sparse_rows(hs, FORMAT_COLS)
        print_table(console, f"format reward, top-k vs random-k selection ({' '.join(fset)})",
                    header, rows)
        plot_format(hs, fset, img)
        result["format"] = {"overrides": fset, "history": hs,
                            "summary": {k: summary(h) for k, h in hs.items()}}

    if args.which in ("stability", "both"):
        if args.search:
            found: dict[str, Any] = {}
            for name, over in SEARCH_GRID.items():
                hs = run_pair(p, args, ckpt, {"kl_weight": 0.0, "ntp_loss_weight": 0.0, **over},
                              {"GRPO": {"early_clip": False}, "ECPO": {"early_clip": True}},
                              args.search_rounds, f"search {name}")
                found[name] = {k: summary(h) for k, h in hs.items()}
            rows = [[name, alg, *summary_cells(s)] for name, algs in found.items()
                    for alg, s in algs.items()]
            print_table(console, f"stability search ({args.search_rounds} rounds each, KL and "
                        f"NTP weights 0)", ["setting", "method", *SUMMARY_COLS], rows,
                        left=["setting", "method"])
            result["search"] = found
        sset = args.stability_set if args.stability_set is not None else STABILITY_DEFAULTS
        base = parse_overrides(sset)
        hs = run_pair(p, args, ckpt, base, {"GRPO": {"early_clip": False},
                                            "ECPO": {"early_clip": True}},
                      args.stability_rounds, "stability")
        header, rows = sparse_rows(hs, STABILITY_COLS)
        print_table(console, f"GRPO vs ECPO ({' '.join(sset)})", header, rows)
        plot_stability(hs, sset, img)
        sums = {k: summary(h) for k, h in hs.items()}
        print_table(console, f"GRPO vs ECPO over {args.stability_rounds} rounds",
                    ["method", *SUMMARY_COLS], [[k, *summary_cells(v)] for k, v in sums.items()],
                    left=["method"])
        result["stability"] = {"overrides": sset, "history": hs,
                               "summary": {k: summary(h) for k, h in hs.items()}}

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"total wall time {(time.perf_counter() - t_start) / 60:.1f} min; {stamp}; "
          f"load average at end: {os.getloadavg()}; argv: {' '.join(sys.argv[1:])}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({**result, "date": stamp, "argv": sys.argv},
                                              default=str, indent=1))
    return result


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
