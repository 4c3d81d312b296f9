"""Choose the demo's training settings on a validation day, never on the gate's held-out days.

    python -m bench.demo_day [--epochs 4 6 8] [--set model.dropout=0.1 ...]

`make demo`'s first cycle holds out 2022-04-27 and its second 2022-04-28; what its models are
reported on must not be what their settings were chosen on. This trains the demo's first-cycle
model (cold start, the `small` preset plus `--set`) on the shipped sample up to 2022-04-26, holds
out that day, and scores it as the gate does (`onerec.stages.evaluate`: every held-out user with
a positive event, constrained beam at `serve.beam_width`) beside popularity, once per
`--epochs` value (passes over the requests decide the steps, as in the demo). The snapshot and
codebook are built once per settings under `--out` and reused.

`--beams` and `--priors` re-score each trained model at other beam widths and transition-memory
priors (`model.transition_prior`; train with it > 0 so the model counts its table): those only
change generation, so one training serves every combination.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.report import csv_of, print_table
from bench.runtime import reexec_with_tuned_env

UNTIL = "2022-04-27"  # the snapshot's end: the held-out day is the one before, 2022-04-26


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="data/kuairand-pure")
    ap.add_argument("--epochs", type=float, nargs="+", default=[6.0])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default="runs/demo_day")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beams", type=csv_of(int), default=[],
                    help="re-score at these beam widths too (comma-separated)")
    ap.add_argument("--priors", type=csv_of(float), default=[],
                    help="re-score at these model.transition_prior values too (comma-separated)")
    args = ap.parse_args(argv)
    reexec_with_tuned_env("bench.demo_day", argv)

    import torch
    from rich.console import Console

    from onerec import stages
    from onerec.checkpoint import CKPT_NAME, load_model
    from onerec.config import Config

    torch.set_num_threads(args.threads)
    cfg = Config.from_preset("small", args.overrides)
    key = hashlib.sha1(json.dumps([cfg.data.__dict__, cfg.tokenizer.__dict__, UNTIL],
                                  sort_keys=True, default=str).encode(),
                       usedforsecurity=False).hexdigest()[:10]
    base = Path(args.out) / key
    root = base / "root"
    if not (base / "codebook").exists():
        root.mkdir(parents=True, exist_ok=True)
        stages.validate(cfg, args.data_dir, base / "snapshot", until=UNTIL, root=root)
        stages.refresh_codebook(cfg, base / "snapshot", base / "codebook", root=root)
    pop = stages.evaluate_popularity(base / "snapshot")["metrics"]
    results, rows = [], [("popularity", "-", "-", f"{pop['recall@10']:.4f}",
                          f"{pop['ndcg@10']:.4f}", "-")]
    for epochs in args.epochs:
        tag = hashlib.sha1(json.dumps([args.overrides, epochs]).encode(), usedforsecurity=False)
        run = base / f"model-{tag.hexdigest()[:8]}"
        t0 = time.perf_counter()
        summary = stages.pretrain(cfg, base / "snapshot", base / "codebook", run, root=root,
                                  warm_start=False, epochs=epochs)
        train_s = time.perf_counter() - t0
        model = load_model(run / CKPT_NAME).model
        space = stages.load_space(base / "codebook")
        snap = stages.Snapshot.load(base / "snapshot")
        for beam, prior in settings(cfg, args.beams, args.priors):
            at = copy.deepcopy(cfg)
            at.serve.beam_width = beam
            model.cfg.transition_prior = prior
            m = stages.evaluate_model(at, snap, model, space)["metrics"]
            results.append({"epochs": epochs, "steps": summary["steps"],
                            "train_s": round(train_s, 1), "overrides": args.overrides,
                            "beam": beam, "transition_prior": prior, **m, "popularity": pop})
            rows.append((f"OneRec, {epochs:g} epochs, beam {beam}, prior {prior:g}",
                         f"{summary['steps']:,}", f"{train_s:.0f}", f"{m['recall@10']:.4f}",
                         f"{m['ndcg@10']:.4f}", f"{m['coverage@10']:.4f}"))
    load = tuple(round(x, 2) for x in os.getloadavg())
    print_table(Console(width=160), f"demo validation day 2022-04-26, {' '.join(args.overrides)}"
                f" (load average {load})", ("model", "steps", "train s", "R@10", "N@10",
                                            "cov@10"), rows, left=("model",))
    return results


def settings(cfg: Any, beams: list[int], priors: list[float]) -> list[tuple[int, float]]:
    """(beam width, transition prior) pairs to score: the Config's own first, then the rest."""
    own = (cfg.serve.beam_width, cfg.model.transition_prior)
    more = [(b, p) for b in beams or [own[0]] for p in priors or [own[1]]]
    return [own, *(x for x in more if x != own)]


if __name__ == "__main__":
    main()
